package sim

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/testlog"
)

func TestMain(m *testing.M) {
	// toxiproxy's latency toxic can stay blocked on a channel send after its
	// proxy stopped (a library goroutine, v2.12): not ours to wait for.
	opts := append(testlog.LeakOptions(), goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"))
	goleak.VerifyTestMain(m, opts...)
}

const shortScenario = `
name: short
seed: 3
topology:
  idcs:
    - {name: a, hosts: 2, slots: 4}
    - {name: b, hosts: 2, slots: 4}
load: {rate: 100, duration: 8s}
handler: {median: 4ms, p99: 12ms}
filter: everything
timeline:
  - {at: 0s, phase: normal, action: normal}
  - {at: 2s, phase: a degraded, action: degrade, idc: a, slowdown: 20, error_rate: 0.5}
  - {at: 5s, phase: a pools lost, action: kill-pools, idc: a}
  - {at: 7s, phase: recovery, action: restore-all}
drain: 30s
`

// runShort plays a scenario in every mode, logs its tables and checks that
// no task is lost or stranded and that the backlog drained in every mode.
func runShort(t *testing.T, doc string) (*Report, Scenario) {
	t.Helper()
	rep, s := play(t, doc, 4)
	for _, m := range rep.Modes {
		if m.Lost != 0 || m.Stranded != 0 || m.Completed != m.Enqueued || !m.Drained {
			t.Errorf("%s: %d enqueued, %d completed, %d lost, %d stranded, drained %v", m.Mode, m.Enqueued, m.Completed, m.Lost, m.Stranded, m.Drained)
		}
	}
	return rep, s
}

// play plays a scenario in every mode on the real components and logs its
// tables (the components' logs from level on).
func play(t *testing.T, doc string, level slog.Level) (*Report, Scenario) {
	t.Helper()
	if testing.Short() {
		t.Skip("simulation skipped in -short mode")
	}
	s, err := ParseScenario([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), s, Options{Dir: t.TempDir(), Logger: testlog.NewLevel(t, level)})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_ = rep.WriteTable(&buf)
	t.Log("\n" + buf.String())
	return rep, s
}

// TestShortScenarioInvariants: on the real components, no task is lost,
// the backlog drains after the faults end, and the mesh beats the
// single-host baseline on peak backlog.
func TestShortScenarioInvariants(t *testing.T) {
	rep, s := runShort(t, shortScenario)
	byMode := map[string]ModeReport{}
	for _, m := range rep.Modes {
		byMode[m.Mode] = m
		if m.Enqueued < 1000 {
			t.Errorf("%s: %d enqueued", m.Mode, m.Enqueued)
		}
	}
	mesh, base := byMode[ModeMesh], byMode[ModeBaseline]
	// The report speaks the operator's metric names (prom.go): the drained
	// mesh shows acks, no ready task, and leases by worker tier.
	if m := mesh.Metrics; m["mqmesh_queue_acked_total"] <= 0 || m["mqmesh_queue_ready_tasks"] != 0 ||
		m["mqmesh_leases_total{tier=local}"] <= 0 || m["mqmesh_worker_tasks_processed_total{tier=local}"] <= 0 {
		t.Errorf("mesh mode metrics: %v", m)
	}
	if mesh.PeakBacklog >= base.PeakBacklog {
		t.Errorf("mesh peak backlog %d not below the baseline's %d", mesh.PeakBacklog, base.PeakBacklog)
	}
	var html bytes.Buffer
	if err := rep.WriteHTML(&html, s.IDCNames()); err != nil || !strings.Contains(html.String(), "<svg") {
		t.Fatalf("html report: %v", err)
	}
	if png, err := rep.BacklogChart("png"); err != nil || len(png) < 1000 {
		t.Fatalf("png chart: %v", err)
	}
	if dir := os.Getenv("MQMESH_SIM_REPORT_DIR"); dir != "" {
		_ = os.WriteFile(dir+"/report.html", html.Bytes(), 0o644)
		png, _ := rep.BacklogChart("png")
		_ = os.WriteFile(dir+"/backlog.png", png, 0o644)
	}
	var csvBuf bytes.Buffer
	if err := rep.WriteCSV(&csvBuf, s.IDCNames()); err != nil || !strings.HasPrefix(csvBuf.String(), "mode,t_s,phase,total_backlog,backlog_a,backlog_b") {
		t.Fatalf("csv: %v %q", err, csvBuf.String()[:80])
	}
}

func TestScenarioErrorsNameTheField(t *testing.T) {
	cases := map[string]string{
		"topology: {idcs: []}\nload: {rate: 1, duration: 1s}\n":                                                                                "topology.idcs",
		"topology: {idcs: [{name: a.b, hosts: 1}]}\nload: {rate: 1, duration: 1s}\n":                                                           "topology.idcs[0].name",
		"topology: {idcs: [{name: a, hosts: 0}]}\nload: {rate: 1, duration: 1s}\n":                                                             "topology.idcs[0].hosts",
		"topology: {idcs: [{name: a, hosts: 1}]}\nload: {rate: 1, duration: 1s}\nfilter: all\n":                                                "filter",
		"topology: {idcs: [{name: a, hosts: 1}]}\nload: {rate: 1, duration: soon}\n":                                                           "not a duration",
		"topology: {idcs: [{name: a, hosts: 1}]}\nload: {rate: 1, duration: 1s}\nbogus: 1\n":                                                   "bogus",
		"topology: {idcs: [{name: a, hosts: 1}]}\nload: {rate: 1, duration: 1s}\ntimeline: [{at: 0s, action: explode}]\n":                      "timeline[0].action",
		"topology: {idcs: [{name: a, hosts: 1}]}\nload: {rate: 1, duration: 1s}\ntimeline: [{at: 0s, action: degrade, idc: z, slowdown: 2}]\n": "timeline[0].idc",
		"topology: {idcs: [{name: a, hosts: 1}]}\nload: {rate: 1, duration: 1s}\ntimeline: [{at: 0s, action: kill-node, host: a-h9}]\n":        "timeline[0].host",
		"topology: {idcs: [{name: a, hosts: 1}]}\nload: {rate: 1, duration: 1s}\ntimeline: [{at: 0s, action: partition}]\n":                    "timeline[0].idc",
		"topology: {idcs: [{name: a, hosts: 1}]}\nload: {rate: 1, duration: 1s}\ntimeline: [{at: 0s, action: slow-link, idc: a}]\n":            "timeline[0].latency",
	}
	for doc, want := range cases {
		if _, err := ParseScenario([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error naming %q", doc, err, want)
		}
	}
}

func TestDefaultScenarioAndExamples(t *testing.T) {
	d := Default()
	if len(d.Topology.IDCs) != 3 || d.Topology.IDCs[0].Hosts != 3 || len(d.Modes) != 2 {
		t.Fatalf("default scenario: %+v", d)
	}
	onDisk, err := os.ReadFile("../configs/sim/default.yaml")
	if err != nil || !bytes.Equal(onDisk, DefaultYAML()) {
		t.Fatal("configs/sim/default.yaml differs from the embedded sim/default.yaml")
	}
	files, _ := os.ReadDir("../configs/sim")
	for _, f := range files {
		if _, err := LoadScenario("../configs/sim/" + f.Name()); err != nil {
			t.Errorf("%s: %v", f.Name(), err)
		}
	}
	for name := range builtinFilters {
		disk, err := backlog.LoadFilters("../configs/filters/" + name + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(disk, mustFilter(name)) {
			t.Errorf("built-in filter %s differs from configs/filters/%s.yaml", name, name)
		}
	}
	_ = time.Second
}
