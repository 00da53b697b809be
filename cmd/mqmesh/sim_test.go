package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSimCommand(t *testing.T) {
	out := mustCLI(t, "sim", "--print-scenario")
	if !strings.Contains(out, "name: default") {
		t.Fatalf("--print-scenario: %q", out[:min(80, len(out))])
	}
	bad := writeFile(t, "bad.yaml", "topology: {idcs: [{name: a, hosts: 1}]}\nload: {rate: 1, duration: 1s}\ntimeline: [{at: 0s, action: explode}]\n")
	_, _, err := cli(t, "", "sim", bad)
	wantErr(t, err, "timeline[0].action", "explode")
	_, _, err = cli(t, "", "sim", "--modes", "fast")
	wantErr(t, err, "--modes", "unthrottled")

	if testing.Short() {
		t.Skip("simulation run skipped in -short mode")
	}
	sc := writeFile(t, "tiny.yaml", `name: tiny
topology:
  idcs:
    - {name: a, hosts: 1, slots: 4}
    - {name: b, hosts: 1, slots: 4}
load: {rate: 50, duration: 3s}
handler: {median: 2ms, p99: 5ms}
timeline:
  - {at: 0s, phase: normal, action: normal}
  - {at: 1s, phase: a pools lost, action: kill-pools, idc: a}
modes: [mesh]
`)
	dir := t.TempDir()
	var rep struct {
		Scenario string `json:"scenario"`
		Modes    []struct {
			Mode     string `json:"mode"`
			Lost     int    `json:"lost"`
			Enqueued int    `json:"enqueued"`
			Drained  bool   `json:"drained"`
			Phases   []struct {
				Name string `json:"name"`
			} `json:"phases"`
		} `json:"modes"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, "sim", sc, "--json", "--quiet", "--out", dir)), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Scenario != "tiny" || len(rep.Modes) != 1 || rep.Modes[0].Lost != 0 || !rep.Modes[0].Drained || rep.Modes[0].Enqueued < 100 || len(rep.Modes[0].Phases) < 2 {
		t.Fatalf("sim --json: %+v", rep)
	}
	for _, f := range []string{"report.html", "series.csv", "backlog.svg", "backlog.png"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s not written: %v", f, err)
		}
	}
}
