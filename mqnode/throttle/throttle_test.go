package throttle

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

type clock struct{ ms int64 }

func (c *clock) now() int64           { return c.ms }
func (c *clock) step(d time.Duration) { c.ms += d.Milliseconds() }

func newTest(t *testing.T, cfg Config) (*Throttle, *clock) {
	t.Helper()
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c := &clock{ms: 1_700_000_000_000}
	return New(cfg, "n1", c.now), c
}

func TestValidateNamesField(t *testing.T) {
	cfg := Config{Backends: map[string]BackendConfig{"user.db": {Budget: 10}, "ok": {Budget: -1}}}.WithDefaults()
	err := cfg.Validate()
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"throttle.backends key", "throttle.backends.ok.budget"} {
		if !contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	bad := Config{Retry: RetryConfig{FailureRatio: 2}}.WithDefaults()
	if err := bad.Validate(); err == nil || !contains(err.Error(), "failure_ratio") {
		t.Errorf("failure_ratio 2: %v", err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// A failing backend closes the retry gate to the probe rate; successes
// reopen it within the recent window.
func TestRetryGateClosesAndReopens(t *testing.T) {
	th, c := newTest(t, Config{})
	// Healthy: 100 successes/s for 3 s.
	for i := 0; i < 300; i++ {
		th.Outcome("q", true)
		c.step(10 * time.Millisecond)
	}
	if ok, _ := th.AdmitRetry("q"); !ok {
		t.Fatal("healthy queue refused a retry")
	}
	// Backend down: 200 failures/s.
	admitted := 0
	for i := 0; i < 1000; i++ { // 5 s
		th.Outcome("q", false)
		if ok, _ := th.AdmitRetry("q"); ok {
			admitted++
		}
		c.step(5 * time.Millisecond)
	}
	st := th.QueueStates("q")[0]
	if !st.Active || st.Kind != "retry" {
		t.Fatalf("gate not closed after 5 s of failures: %+v", st)
	}
	// The gate closes once the last two seconds are half failures (1 s
	// into the outage here); then retries run at the success rate of the
	// last second, which falls to 0 within a second: about 200 in all, well
	// below the 1,000 asked for.
	if admitted > 300 {
		t.Errorf("admitted %d of 1000 retries while the backend failed", admitted)
	}
	// Now the window holds only failures: the limit is the probe rate.
	late := 0
	for i := 0; i < 400; i++ { // 2 s more
		th.Outcome("q", false)
		if ok, _ := th.AdmitRetry("q"); ok {
			late++
		}
		c.step(5 * time.Millisecond)
	}
	if late > 4 {
		t.Errorf("admitted %d retries in 2 s at probe rate 1/s", late)
	}
	if ok, d := th.AdmitRetry("q"); !ok && (d < 200*time.Millisecond || d > 6*time.Second) {
		t.Errorf("defer delay %v out of range", d)
	}
	// Recovery: 20 successes in a row (200 ms) reopen the gate.
	for i := 0; i < 20; i++ {
		th.Outcome("q", true)
		c.step(10 * time.Millisecond)
	}
	if st := th.QueueStates("q")[0]; st.Active {
		t.Fatalf("gate still closed after recovery: %+v", st)
	}
	if ok, _ := th.AdmitRetry("q"); !ok {
		t.Fatal("recovered queue refused a retry")
	}
}

func TestRetryGateDisabled(t *testing.T) {
	th, c := newTest(t, Config{Disabled: true})
	for i := 0; i < 100; i++ {
		th.Outcome("q", false)
		c.step(time.Millisecond)
	}
	for i := 0; i < 100; i++ {
		if ok, _ := th.AdmitRetry("q"); !ok {
			t.Fatal("disabled throttle refused a retry")
		}
	}
}

func TestCPUControlAIMD(t *testing.T) {
	th, c := newTest(t, Config{CPU: CPUConfig{Signal: SignalHost}})
	dispatch := func(d time.Duration, want int) int {
		got := 0
		for end := c.ms + d.Milliseconds(); c.ms < end; c.step(time.Millisecond) {
			g, _, _ := th.Dispatch("q", want)
			got += g
		}
		return got
	}
	// Unlimited at low CPU: 10 tasks a ms.
	if n := dispatch(500*time.Millisecond, 10); n != 5000 {
		t.Fatalf("unthrottled dispatch %d, want 5000", n)
	}
	th.SampleCPU(0.3)
	if th.NodeStates()[0].Active {
		t.Fatal("limit at 30% cpu")
	}
	// Hot: each interval cuts the rate to 0.7× the last one.
	dispatch(500*time.Millisecond, 10)
	th.SampleCPU(0.97)
	st := th.NodeStates()[0]
	if !st.Active || math.Abs(st.Limit-0.7*10000) > 1 {
		t.Fatalf("after one hot sample: %+v", st)
	}
	n := dispatch(time.Second, 10)
	if n < 6500 || n > 7500 {
		t.Errorf("dispatched %d in 1 s at a 7000/s limit", n)
	}
	for i := 0; i < 40; i++ {
		dispatch(500*time.Millisecond, 10)
		th.SampleCPU(0.97)
	}
	if st := th.NodeStates()[0]; st.Limit != DefaultCPUMinRate {
		t.Errorf("limit %v after sustained pressure, want the floor %v", st.Limit, DefaultCPUMinRate)
	}
	// Cool: the limit rises by 1.25× an interval, then lifts.
	for i := 0; i < 60 && th.NodeStates()[0].Active; i++ {
		dispatch(500*time.Millisecond, 10)
		th.SampleCPU(0.2)
	}
	if st := th.NodeStates()[0]; st.Active {
		t.Errorf("limit not lifted after 30 s of low cpu: %+v", st)
	}
}

// Three nodes share one backend budget by exchanging reports; each
// dispatches as much as its share lets it, with k calls per task. The sum
// converges to the budget and every node gets a fair part.
func TestBudgetConvergesMeshWide(t *testing.T) {
	const budget, k = 300.0, 3
	c := &clock{ms: 1_700_000_000_000}
	cfg := Config{Backends: map[string]BackendConfig{"user-db": {Budget: budget}}}.WithDefaults()
	names := []string{"a", "b", "c"}
	nodes := map[string]*Throttle{}
	for _, n := range names {
		nodes[n] = New(cfg, n, c.now)
	}
	// Node c has little work: 10 tasks/s. a and b are greedy.
	calls := map[string]int{}
	var tick int64
	for step := 0; step < 10_000; step++ { // 10 s in 1 ms steps
		for _, n := range names {
			want := 5
			if n == "c" {
				want = 0
				if step%100 == 0 {
					want = 1
				}
			}
			g, _, _ := nodes[n].Dispatch("q", want)
			for i := 0; i < g; i++ {
				nodes[n].Settled("q", []Calls{{"user-db", k}}, Succeeded)
				if step >= 5000 {
					calls[n] += k
				}
			}
		}
		if tick++; tick%250 == 0 {
			for _, n := range names {
				rep := nodes[n].Share()
				for _, m := range names {
					nodes[m].Peer(n, rep)
				}
			}
		}
		c.step(time.Millisecond)
	}
	total := float64(calls["a"]+calls["b"]+calls["c"]) / 5
	if math.Abs(total-budget) > 0.1*budget {
		t.Errorf("mesh call rate %.1f/s, budget %v (a %d b %d c %d calls in 5 s)", total, budget, calls["a"], calls["b"], calls["c"])
	}
	for _, n := range []string{"a", "b"} {
		if r := float64(calls[n]) / 5; r < 0.35*budget {
			t.Errorf("node %s starved: %.1f calls/s", n, r)
		}
	}
	if r := float64(calls["c"]) / 5; r < 25 {
		t.Errorf("light node c got %.1f calls/s, wants 30", r)
	}
	bs := nodes["a"].Backends()
	if len(bs) != 1 || bs[0].Nodes != 3 || !bs[0].Constrained {
		t.Errorf("backend state of a: %+v", bs)
	}
}

func TestWindowRate(t *testing.T) {
	w := newWindow(5*time.Second, 20)
	now := int64(10_000)
	for i := 0; i < 500; i++ {
		w.add(now, 1, 0)
		now += 10
	}
	if r := w.rate(now); math.Abs(r-100) > 5 {
		t.Errorf("rate %.1f, want ~100", r)
	}
	now += 10_000
	if r := w.rate(now); r != 0 {
		t.Errorf("rate %v after the window passed", r)
	}
}

// A queue whose handlers stop calling a budgeted backend must not make
// dispatch overflow (its mean cost decays to nothing and is dropped).
func TestCostDecayKeepsDispatchSane(t *testing.T) {
	th, c := newTest(t, Config{Backends: map[string]BackendConfig{"db": {Budget: 50}}})
	th.Settled("q", []Calls{{"db", 2}}, Succeeded)
	for i := 0; i < 2000; i++ {
		th.Settled("q", nil, Succeeded)
		c.step(time.Millisecond)
	}
	g, _, _ := th.Dispatch("q", 500)
	if g != 500 {
		t.Fatalf("granted %d of 500 for a queue that no longer calls the budgeted backend", g)
	}
	// Failures without calls do not lower a queue's cost.
	th.Settled("r", []Calls{{"db", 4}}, Succeeded)
	for i := 0; i < 2000; i++ {
		th.Settled("r", nil, Failed)
	}
	if st := th.QueueStates("r"); len(st) != 2 || st[1].Kind != "budget" {
		t.Fatalf("queue r lost its budget after failures: %+v", st)
	}
}

func TestNonFiniteConfigRejected(t *testing.T) {
	for _, cfg := range []Config{
		{Backends: map[string]BackendConfig{"db": {Budget: math.NaN()}}},
		{Backends: map[string]BackendConfig{"db": {Budget: math.Inf(1)}}},
		{Retry: RetryConfig{ProbeRate: math.NaN()}},
		{CPU: CPUConfig{MinRate: math.Inf(1)}},
		{CPU: CPUConfig{Ceiling: math.NaN()}},
	} {
		if err := cfg.WithDefaults().Validate(); err == nil {
			t.Errorf("config accepted: %+v", cfg)
		}
	}
}

// Two queues on one node share a backend's bucket: a queue of 10 calls per
// task is not starved by a queue of 1 call per task.
func TestBudgetSharedByCheapAndCostlyQueues(t *testing.T) {
	th, c := newTest(t, Config{Backends: map[string]BackendConfig{"db": {Budget: 100}}})
	th.Settled("cheap", []Calls{{"db", 1}}, Succeeded)
	th.Settled("big", []Calls{{"db", 10}}, Succeeded)
	got := map[string]int{}
	for step := 0; step < 10_000; step++ { // 10 s
		order := []string{"cheap", "big"}
		if step%2 == 1 { // pulls of both queues come in any order
			order[0], order[1] = order[1], order[0]
		}
		for _, q := range order {
			g, _, _ := th.Dispatch(q, 4)
			got[q] += g
		}
		c.step(time.Millisecond)
	}
	calls := got["cheap"] + 10*got["big"]
	if got["big"] < 20 || math.Abs(float64(calls)/10-100) > 15 {
		t.Errorf("in 10 s: cheap %d tasks, big %d tasks, %d calls (budget 100/s)", got["cheap"], got["big"], calls)
	}
}

// Under a partial failure below the ratio the gate stays open; at a
// steady failure above it, it closes once and stays closed instead of
// flapping.
func TestRetryGateDoesNotFlap(t *testing.T) {
	for _, tc := range []struct {
		failure    float64
		wantClosed bool
	}{{0.3, false}, {0.4, false}, {0.8, true}} {
		th, c := newTest(t, Config{})
		rng := rand.New(rand.NewPCG(1, uint64(100*tc.failure)))
		transitions, closed := 0, false
		for i := 0; i < 40_000; i++ { // 200 s at 200 outcomes/s
			th.Outcome("q", rng.Float64() >= tc.failure)
			c.step(5 * time.Millisecond)
			if i%200 == 0 {
				if a := th.QueueStates("q")[0].Active; a != closed {
					transitions++
					closed = a
				}
			}
		}
		if closed != tc.wantClosed || transitions > 1 {
			t.Errorf("failure %.0f%%: closed %v after %d state changes in 200 s, want closed %v after at most 1", 100*tc.failure, closed, transitions, tc.wantClosed)
		}
	}
}

// A light node that pulls in bursts does not claim an equal share it would
// not use, and when a node leaves (stops reporting) the others take its
// share after peer_ttl.
func TestBudgetLightNodeAndLeave(t *testing.T) {
	const budget, k = 300.0, 3
	c := &clock{ms: 1_700_000_000_000}
	cfg := Config{Backends: map[string]BackendConfig{"db": {Budget: budget}}}.WithDefaults()
	names := []string{"a", "b", "c"}
	nodes := map[string]*Throttle{}
	for _, n := range names {
		nodes[n] = New(cfg, n, c.now)
		nodes[n].Settled("q", []Calls{{"db", k}}, Succeeded)
	}
	gone := false
	pendingC := 0
	window := func(from, to int) map[string]int {
		calls := map[string]int{}
		for step := from; step < to; step++ {
			for _, n := range names {
				if n == "c" && gone {
					continue
				}
				want := 5
				if n == "c" { // c: a burst of 12 tasks once a second, pulled as tokens allow
					if step%1000 == 0 {
						pendingC += 12
					}
					want = min(pendingC, 5)
				}
				g, _, _ := nodes[n].Dispatch("q", want)
				if n == "c" {
					pendingC -= g
				}
				for i := 0; i < g; i++ {
					nodes[n].Settled("q", []Calls{{"db", k}}, Succeeded)
				}
				calls[n] += g * k
			}
			if step%250 == 0 {
				for _, n := range names {
					if n == "c" && gone {
						continue
					}
					rep := nodes[n].Share()
					for _, m := range names {
						nodes[m].Peer(n, rep)
					}
				}
			}
			c.step(time.Millisecond)
		}
		return calls
	}
	window(0, 5000)
	calls := window(5000, 10_000)
	total := float64(calls["a"]+calls["b"]+calls["c"]) / 5
	if total < 0.9*budget || total > 1.1*budget || calls["c"] < 5*36*0.9 {
		t.Errorf("with a light node: mesh %.0f calls/s of %v, per node (5 s) %v", total, budget, calls)
	}
	gone = true
	window(10_000, 13_000) // peer_ttl 2 s
	calls = window(13_000, 18_000)
	if total := float64(calls["a"]+calls["b"]) / 5; total < 0.9*budget || total > 1.1*budget {
		t.Errorf("after c left: mesh %.0f calls/s of %v (%v)", total, budget, calls)
	}
	if bs := nodes["a"].Backends(); bs[0].Nodes != 2 {
		t.Errorf("a still counts %d nodes", bs[0].Nodes)
	}
}

// TestStarvationSignal: with the default signal the node cuts its dispatch
// only when its own scheduling delay exceeds max_delay, whatever the host's
// CPU: a calm node (delays in microseconds) is never limited, a starved one
// is cut to the floor and the limit lifts once it is calm again.
func TestStarvationSignal(t *testing.T) {
	th, c := newTest(t, Config{})
	if got := th.Config().CPU.Signal; got != SignalStarvation {
		t.Fatalf("default signal %q", got)
	}
	dispatch := func(d time.Duration, want int) {
		for end := c.ms + d.Milliseconds(); c.ms < end; c.step(time.Millisecond) {
			th.Dispatch("q", want)
		}
	}
	for i := 0; i < 20; i++ { // a healthy node on a busy host
		dispatch(500*time.Millisecond, 10)
		th.SampleStarvation(300 * time.Microsecond)
	}
	if st := th.NodeStates()[0]; st.Active || !strings.Contains(st.Reason, "scheduling delay") {
		t.Fatalf("calm node limited: %+v", st)
	}
	for i := 0; i < 40; i++ {
		dispatch(500*time.Millisecond, 10)
		th.SampleStarvation(20 * time.Millisecond)
	}
	if st := th.NodeStates()[0]; !st.Active || st.Limit != DefaultCPUMinRate {
		t.Fatalf("starved node not at the floor: %+v", st)
	}
	for i := 0; i < 60 && th.NodeStates()[0].Active; i++ {
		dispatch(500*time.Millisecond, 10)
		th.SampleStarvation(100 * time.Microsecond)
	}
	if st := th.NodeStates()[0]; st.Active {
		t.Errorf("limit not lifted after 30 s calm: %+v", st)
	}
}

// TestProcessStarvationReadsThisProcess: the real sampler works here and
// reports a small delay for an idle test process.
func TestProcessStarvationReadsThisProcess(t *testing.T) {
	s := ProcessStarvation()
	if _, err := s(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	d, err := s()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("idle test process: scheduling delay %s", d)
	if d < 0 || d > time.Second {
		t.Fatalf("implausible delay %s", d)
	}
}
