package demo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/worker"
)

func mustNew(t *testing.T, s Spec, env Env) *Handler {
	t.Helper()
	h, err := New(s, env)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// rates draws n steps and returns the share of retries and give-ups.
func rates(h *Handler, n int) (retry, giveUp float64) {
	var r, g int
	for range n {
		switch h.draw().outcome {
		case outcomeRetry:
			r++
		case outcomeGiveUp:
			g++
		}
	}
	return float64(r) / float64(n), float64(g) / float64(n)
}

func TestErrorRates(t *testing.T) {
	const n = 50000
	const tol = 0.01 // > 4 standard deviations at these rates and n
	flaky := Spec{Kind: KindFlaky, ErrorRate: 0.2, GiveUpRate: 0.05,
		Slowdown: map[string]Slowdown{"east": {ErrorRate: 0.3}, "west": {ErrorRate: 0.9}}}
	for _, tc := range []struct {
		name              string
		spec              Spec
		idc               string
		wantRetry, wantGU float64
	}{
		{"flaky", flaky, "north", 0.2, 0.05},
		{"flaky slowed", flaky, "east", 0.5, 0.05},
		{"flaky slowed past 1", flaky, "west", 0.95, 0.05}, // clamped: 1 - give_up_rate
		{"never fails", Spec{Kind: KindFlaky}, "", 0, 0},
		{"always fails", Spec{Kind: KindFlaky, ErrorRate: 1}, "", 1, 0},
		{"always gives up", Spec{Kind: KindFlaky, GiveUpRate: 1}, "", 0, 1},
		{"sleep", Spec{Kind: KindSleep, Slowdown: flaky.Slowdown}, "north", 0, 0},
		{"sleep slowed", Spec{Kind: KindSleep, Slowdown: flaky.Slowdown}, "east", 0.3, 0},
		{"fanout slowed", Spec{Kind: KindFanout, Fanout: &Fanout{Queue: "q", Count: 1}, Slowdown: flaky.Slowdown}, "east", 0.3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, seed := range []uint64{1, 99} {
				r, g := rates(mustNew(t, tc.spec, Env{IDC: tc.idc, Seed: seed}), n)
				if math.Abs(r-tc.wantRetry) > tol || math.Abs(g-tc.wantGU) > tol {
					t.Errorf("seed %d: retry %.4f give-up %.4f, want %.2f and %.2f ±%.2f", seed, r, g, tc.wantRetry, tc.wantGU, tol)
				}
			}
		})
	}
}

func TestSlowdownLatency(t *testing.T) {
	s := Spec{Kind: KindSleep, Latency: Latency{Value: 10 * time.Millisecond},
		Slowdown: map[string]Slowdown{"east": {LatencyFactor: 3}, "west": {LatencyFactor: 0.5}, "south": {ErrorRate: 0.1}}}
	for idc, want := range map[string]time.Duration{"east": 30 * time.Millisecond, "west": 5 * time.Millisecond, "south": 10 * time.Millisecond, "north": 10 * time.Millisecond} {
		if got := mustNew(t, s, Env{IDC: idc, Seed: 1}).draw().latency; got != want {
			t.Errorf("idc %s: latency %s, want %s", idc, got, want)
		}
	}
	// A factor scales the whole distribution: the p99 too.
	ln := Spec{Kind: KindSleep, Latency: Latency{Median: 10 * time.Millisecond, P99: 100 * time.Millisecond},
		Slowdown: map[string]Slowdown{"east": {LatencyFactor: 5}}}
	h := mustNew(t, ln, Env{IDC: "east", Seed: 3})
	lat := make([]time.Duration, 10000)
	for i := range lat {
		lat[i] = h.draw().latency
	}
	if p99 := quantileOf(lat, 0.99); !within(p99, 500*time.Millisecond, 0.2) {
		t.Fatalf("slowed p99 %s, want 500ms ±20%%", p99)
	}
}

func quantileOf(s []time.Duration, q float64) time.Duration {
	c := slices.Clone(s)
	slices.Sort(c)
	return quantile(c, q)
}

func TestFanoutCounts(t *testing.T) {
	for _, tc := range []struct {
		f      Fanout
		lo, hi int
	}{
		{Fanout{Queue: "q", Count: 1}, 1, 1},
		{Fanout{Queue: "q", Count: 20}, 20, 20},
		{Fanout{Queue: "q", Count: 2, MaxCount: 6}, 2, 6},
		{Fanout{Queue: "q", Count: MaxFanout}, MaxFanout, MaxFanout},
	} {
		t.Run(fmt.Sprintf("%d..%d", tc.lo, tc.hi), func(t *testing.T) {
			f := tc.f
			h := mustNew(t, Spec{Kind: KindFanout, Fanout: &f}, Env{Seed: 5})
			seen := map[int]int{}
			for range 5000 {
				n := h.draw().subtasks
				if n < tc.lo || n > tc.hi {
					t.Fatalf("%d subtasks, want %d..%d", n, tc.lo, tc.hi)
				}
				seen[n]++
			}
			if len(seen) != tc.hi-tc.lo+1 {
				t.Fatalf("counts drawn %v, want every one of %d..%d", seen, tc.lo, tc.hi)
			}
		})
	}
	// A failed fanout task returns no subtasks.
	h := mustNew(t, Spec{Kind: KindFanout, Fanout: &Fanout{Queue: "q", Count: 3}, Slowdown: map[string]Slowdown{"a": {ErrorRate: 1}}}, Env{IDC: "a", Seed: 1})
	if s := h.draw(); s.outcome != outcomeRetry || s.subtasks != 0 {
		t.Fatalf("failed fanout step %+v", s)
	}
}

func TestSubtasksDerivedFromParent(t *testing.T) {
	parent := &worker.Task{ID: "t1", Payload: []byte("msg")}
	subs := Subtasks(parent, 3, time.Second)
	if len(subs) != 3 {
		t.Fatalf("%d subtasks", len(subs))
	}
	for i, s := range subs {
		idx := fmt.Sprint(i)
		if string(s.Payload) != "msg/"+idx || s.Headers[HeaderParent] != "t1" || s.Headers[HeaderIndex] != idx || s.DedupKey != "t1/"+idx || s.Delay != time.Second {
			t.Fatalf("subtask %d: %+v", i, s)
		}
	}
	if string(parent.Payload) != "msg" {
		t.Fatal("parent payload changed")
	}
}

func TestDeterministicUnderSeed(t *testing.T) {
	s := Spec{Kind: KindFlaky, ErrorRate: 0.3, GiveUpRate: 0.1, Latency: Latency{Median: time.Millisecond, P99: 9 * time.Millisecond}}
	a, b, c := mustNew(t, s, Env{Seed: 11}), mustNew(t, s, Env{Seed: 11}), mustNew(t, s, Env{Seed: 12})
	same, differs := true, false
	for range 1000 {
		x, y, z := a.draw(), b.draw(), c.draw()
		same = same && x == y
		differs = differs || x != z
	}
	if !same || !differs {
		t.Fatalf("same seed same steps: %v; other seed other steps: %v", same, differs)
	}
	// The spec's own seed wins over the environment's.
	s.Seed = 11
	if d, e := mustNew(t, s, Env{Seed: 99}), mustNew(t, s, Env{}); d.draw() != e.draw() {
		t.Fatal("spec seed not used")
	}
}

// TestHandleConcurrent runs Handle from many goroutines (under -race) and
// checks that the counts add up and match the configured rates.
func TestHandleConcurrent(t *testing.T) {
	h := mustNew(t, Spec{Kind: KindFlaky, ErrorRate: 0.25, GiveUpRate: 0.25}, Env{Seed: 3})
	const workers, each = 16, 1000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				h.Handle(t.Context(), &worker.Task{ID: fmt.Sprint(w, "-", i)})
			}
		}()
	}
	wg.Wait()
	c := h.Counts()
	if c.Done+c.Retried+c.GaveUp != workers*each || c.Cancelled != 0 {
		t.Fatalf("counts %+v", c)
	}
	for name, got := range map[string]uint64{"done": c.Done, "retried": c.Retried, "gave up": c.GaveUp} {
		want := map[string]float64{"done": 0.5, "retried": 0.25, "gave up": 0.25}[name]
		if r := float64(got) / (workers * each); math.Abs(r-want) > 0.03 {
			t.Errorf("%s %.3f, want %.2f", name, r, want)
		}
	}
}

func TestHandleFanoutCounts(t *testing.T) {
	h := mustNew(t, Spec{Kind: KindFanout, Fanout: &Fanout{Queue: "q", Count: 4}}, Env{Seed: 1})
	for i := range 10 {
		h.Handle(t.Context(), &worker.Task{ID: fmt.Sprint(i)})
	}
	if c := h.Counts(); c.Done != 10 || c.Subtasks != 40 {
		t.Fatalf("counts %+v", c)
	}
}

func TestHandleHonoursContext(t *testing.T) {
	h := mustNew(t, Spec{Kind: KindSleep, Latency: Latency{Value: time.Hour}}, Env{Seed: 1})
	ctx, cancel := context.WithCancelCause(t.Context())
	errStop := errors.New("hard stop")
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Handle(ctx, &worker.Task{ID: "t"})
	}()
	cancel(errStop)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("handler ignored its cancelled context")
	}
	if c := h.Counts(); c.Cancelled != 1 || c.Done != 0 {
		t.Fatalf("counts %+v", c)
	}
	// Already cancelled, no latency: still not done.
	h0 := mustNew(t, Spec{Kind: KindSleep}, Env{})
	h0.Handle(ctx, &worker.Task{ID: "t"})
	if c := h0.Counts(); c.Cancelled != 1 {
		t.Fatalf("counts %+v", c)
	}
}

func TestNewRefusesBadSpec(t *testing.T) {
	if _, err := New(Spec{Kind: "nope"}, Env{}); err == nil || !strings.Contains(err.Error(), `demo: kind "nope"`) {
		t.Fatalf("error %v", err)
	}
}
