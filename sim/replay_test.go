package sim

import (
	"strings"
	"testing"
)

// A bad deploy acks tasks without the work; the replay after the fix
// repairs every one of them: nothing lost, every badly acked task
// completed by its replayed copy.
func TestBadDeployRepairedByReplay(t *testing.T) {
	rep, _ := runShort(t, `
name: bad-deploy
seed: 5
topology:
  idcs:
    - {name: a, hosts: 2, slots: 4}
load: {rate: 100, duration: 7s}
handler: {median: 4ms, p99: 12ms}
modes: [mesh]
timeline:
  - {at: 0s, phase: normal, action: normal}
  - {at: 2s, phase: bad deploy, action: bad-deploy}
  - {at: 4s, phase: fixed, action: replay}
drain: 30s
`)
	m := rep.Modes[0]
	d := m.Deploy
	if d == nil || d.BadAcked < 100 || d.Repaired != d.BadAcked || d.Replayed < d.BadAcked || d.ReplayErrors != 0 {
		t.Fatalf("deploy report %+v", d)
	}
	var buf strings.Builder
	_ = rep.WriteTable(&buf)
	if !strings.Contains(buf.String(), "bad deploy acked") {
		t.Fatalf("table has no deploy line:\n%s", buf.String())
	}
	var html strings.Builder
	if err := rep.WriteHTML(&html, []string{"a"}); err != nil || !strings.Contains(html.String(), "Bad deploy:") {
		t.Fatalf("html report has no deploy line: %v", err)
	}
}

func TestBadDeployScenarioErrors(t *testing.T) {
	_, err := ParseScenario([]byte(shortScenario + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(shortScenario, "action: normal}", "action: bad-deploy, idc: nowhere}", 1)
	if _, err := ParseScenario([]byte(bad)); err == nil || !strings.Contains(err.Error(), "timeline[0].idc") {
		t.Fatalf("bad-deploy with an unknown IDC: %v", err)
	}
}
