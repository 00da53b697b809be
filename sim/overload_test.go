package sim

import (
	"strings"
	"testing"
	"time"
)

func TestOverloadScenarioErrorsNameTheField(t *testing.T) {
	const base = "topology: {idcs: [{name: a, hosts: 1}]}\nload: {rate: 1, duration: 2s}\n"
	cases := map[string]string{
		"throttle: {retry: {failure_ratio: 2}}\n":                                      "throttle.retry.failure_ratio",
		"throttle: {cpu: {enabled: true, ceiling: 5}}\n":                               "throttle.cpu.ceiling",
		"throttle: {cpu: {disabled: true}}\n":                                          "field disabled not found",
		"throttle: {cpu: {sampler: proc}}\n":                                           "throttle.cpu.sampler",
		"throttle: {retry: {window: soon}}\n":                                          "soon",
		"handler: {backend: {name: db}}\nthrottle: {backends: {db: {budget: 0}}}\n":    "throttle.backends.db.budget",
		"handler: {backend: {name: db}}\nthrottle: {backends: {other: {budget: 5}}}\n": "throttle.backends.other",
		"handler: {backend: {name: a.b}}\n":                                            "handler.backend.name",
		"handler: {backend: {name: db, calls: -1}}\n":                                  "handler.backend.calls",
		"handler: {cpu: -1ms}\n":                                                       "handler.cpu",
		"timeline: [{at: 0s, action: backend-fail, idc: z}]\n":                         "timeline[0].idc",
		"timeline: [{at: 0s, action: cpu-hog, procs: -2}]\n":                           "timeline[0].procs",
		"modes: [mesh, fast]\n":                                                        "modes[1]",
	}
	for doc, want := range cases {
		if _, err := ParseScenario([]byte(base + doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error naming %q", doc, err, want)
		}
	}
	s, err := ParseScenario([]byte(base + "handler: {backend: {name: db}}\nthrottle: {cpu: {enabled: true}, backends: {db: {budget: 9}}}\nmodes: [unthrottled]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Throttle.Config(ModeMesh); c.Disabled || c.CPU.Disabled || c.Backends["db"].Budget != 9 || s.Handler.Backend.Calls != 1 {
		t.Errorf("mesh throttle config %+v, handler backend %+v", c, s.Handler.Backend)
	}
	if !s.Throttle.Config(ModeUnthrottled).Disabled || !Default().Throttle.Config(ModeMesh).CPU.Disabled {
		t.Error("unthrottled must disable every throttle, and the default scenario keep the CPU throttle off")
	}
}

// TestHogStops: the burners start, replace each other and stop (the
// TestMain leak check sees any left behind).
func TestHogStops(t *testing.T) {
	var h hog
	h.start(2)
	h.start(1)
	time.Sleep(10 * time.Millisecond)
	h.calm()
	h.calm()
	t0 := time.Now()
	burnCPU(2 * time.Millisecond)
	if d := time.Since(t0); d < time.Millisecond || d > 2*time.Second {
		t.Errorf("burnCPU(2ms) took %s", d)
	}
}

// TestRetryStormShort: while the backend refuses every call, the retry gate
// keeps retries to a trickle where the unthrottled mesh storms; nothing is
// lost either way.
func TestRetryStormShort(t *testing.T) {
	rep, _ := runShort(t, `
name: storm
topology: {idcs: [{name: a, hosts: 2, slots: 4}]}
load: {rate: 100, duration: 7s}
handler: {median: 3ms, p99: 10ms, backend: {name: api}}
timeline:
  - {at: 0s, phase: healthy, action: normal}
  - {at: 2s, phase: down, action: backend-fail}
  - {at: 5s, phase: back, action: backend-recover}
modes: [mesh, unthrottled]
`)
	on, off := rep.mode(ModeMesh), rep.mode(ModeUnthrottled)
	if len(on.Outages) != 1 || len(off.Outages) != 1 {
		t.Fatalf("outages: %+v / %+v", on.Outages, off.Outages)
	}
	// Judged once the gates had a second to close.
	a, b := on.Outages[0], off.Outages[0]
	if a.LaterRetriesPerS*5 > b.LaterRetriesPerS || b.LaterRetriesPerS < b.BeforePerS {
		t.Errorf("retries/s while down (after its first second): throttled %.1f, unthrottled %.1f (healthy throughput %.0f/s): want a storm only without throttling",
			a.LaterRetriesPerS, b.LaterRetriesPerS, b.BeforePerS)
	}
	if on.RetriesDeferred == 0 || off.RetriesDeferred != 0 {
		t.Errorf("retries deferred: throttled %d, unthrottled %d", on.RetriesDeferred, off.RetriesDeferred)
	}
	if a.RecoveredAfterS < 0 || b.RecoveredAfterS < 0 {
		t.Errorf("not back to 90%% of the throughput after the recovery: %+v / %+v", a, b)
	}
}

// TestBackendBudgetShort: three nodes asking for 1.5× a backend's budget
// hold the mesh-wide call rate within ±10% of it, and each makes progress.
func TestBackendBudgetShort(t *testing.T) {
	rep, s := runShort(t, `
name: budget
topology: {idcs: [{name: a, hosts: 3, slots: 4}]}
load: {rate: 30, duration: 8s}
handler: {median: 3ms, p99: 10ms, backend: {name: db, calls: 3}}
throttle: {backends: {db: {budget: 180}}}
modes: [mesh]
`)
	m := rep.mode(ModeMesh)
	b := m.Budget
	if b == nil {
		t.Fatal("no budget report")
	}
	// Judged from 2 s on (convergence takes about one share interval after
	// the first settlements); a loaded machine may bunch completions, so
	// the mean, not every 1 s window.
	calls := rateOver(m.Series, 2, s.Load.Duration.D().Seconds(), func(x Sample) float64 { return float64(x.Calls) })
	t.Logf("converged %.1fs after the load started; %.0f calls/s from 2 s on; least node progress %.2f", b.ConvergedS, calls, b.MinNodeShare)
	if calls < 0.9*b.Budget || calls > 1.1*b.Budget {
		t.Errorf("mesh-wide calls %.0f/s, want within ±10%% of %.0f", calls, b.Budget)
	}
	if b.MinNodeShare < 0.5 {
		t.Errorf("a node made %.2f of the mean progress", b.MinNodeShare)
	}
}
