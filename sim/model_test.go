package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/worker"
)

// smallModel is a model small enough for the race detector: hosts hosts in
// 3 IDCs, 9 s of load, the fault (if any) from 3 s to 6 s.
func smallModel(t *testing.T, hosts int, fault string, seed uint64) ModelConfig {
	t.Helper()
	s := Default()
	s.Seed = seed
	c, err := ModelFromScenario(s, hosts, 3, 9*time.Second, 20, fault)
	if err != nil {
		t.Fatal(err)
	}
	c.CheckViews = 1 // compare every decision's entries with View.Entries()
	return c
}

func runModel(t *testing.T, c ModelConfig) *ModelResult {
	t.Helper()
	r, err := RunModel(context.Background(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Lost != 0 || r.ViewMismatches != 0 || r.StaleNotices != 0 {
		t.Fatalf("lost %d, view mismatches %d, stale notices %d", r.Lost, r.ViewMismatches, r.StaleNotices)
	}
	if r.ViewChecks != r.Decisions {
		t.Fatalf("views checked %d times for %d decisions", r.ViewChecks, r.Decisions)
	}
	return r
}

func phase(t *testing.T, r *ModelResult, name string) ModelPhase {
	t.Helper()
	for _, p := range r.Phases {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no phase %q in %+v", name, r.Phases)
	return ModelPhase{}
}

// Same seed and sizes: the same bytes; another seed: other results.
func TestModelDeterministic(t *testing.T) {
	out := func(seed uint64) (string, string) {
		c := smallModel(t, 45, FaultPoolsLost, seed)
		rep, err := RunModels(context.Background(), c, []int{45, 24}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var tbl bytes.Buffer
		if err := rep.WriteTable(&tbl); err != nil {
			t.Fatal(err)
		}
		js, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		return tbl.String(), string(js)
	}
	t1, j1 := out(7)
	t2, j2 := out(7)
	if t1 != t2 || j1 != j2 {
		t.Fatalf("same seed, different output:\n%s\n---\n%s", t1, t2)
	}
	if !strings.Contains(t1, "sizes run: 24, 45 hosts") {
		t.Fatalf("sizes not stated:\n%s", t1)
	}
	t3, j3 := out(8)
	if t3 == t1 || j3 == j1 {
		t.Fatal("another seed gave the same output")
	}
	t.Logf("\n%s", t1)
}

// The model's pools are worker.Scheduler and its nodes backlog.Planner:
// the same structs the fetch loop and the Publisher wrap, so the model runs
// the real transitions by construction. The test checks the wiring: every
// decision the model's schedulers make is worker.Decide's (replayed from the
// pool's random state), every pull served is an action some decision
// produced, and a stand-in policy that never helps changes the outcome.
func TestModelRunsTheRealPolicy(t *testing.T) {
	c := smallModel(t, 150, FaultPoolsLost, 3)
	type rec struct {
		s     worker.Situation
		state []byte
		d     worker.Decision
	}
	var recs []rec
	var pulls, remote, published int
	c.hooks = &modelHooks{
		onDecide: func(pool string, s worker.Situation, state []byte, d worker.Decision) {
			s.Entries = append([]backlog.Entry(nil), s.Entries...)
			recs = append(recs, rec{s, state, d})
		},
		onPull: func(pool string, a worker.Action, at, arrived time.Duration) {
			pulls++
			rtt := map[worker.Where]time.Duration{worker.Local: c.Net.PullLocal, worker.SameIDC: c.Net.PullSameIDC, worker.OtherIDC: c.Net.PullCrossIDC}[a.Where]
			if arrived != at+a.Delay+rtt/2 {
				t.Fatalf("pull by %s decided at %s with delay %s arrived at %s", pool, at, a.Delay, arrived)
			}
			if a.Where != worker.Local {
				remote++
			}
		},
		onPublish: func(node string, n backlog.Notice) {
			if n.Msg.Node != node || n.Msg.Seq == 0 {
				t.Fatalf("notice of %s: %+v", node, n.Msg)
			}
			published++
		},
	}
	r := runModel(t, c)
	if len(recs) == 0 || uint64(pulls) != r.Pulls || remote == 0 || published == 0 {
		t.Fatalf("%d decisions recorded (%d made), %d pulls (%d), %d remote, %d published", len(recs), r.Decisions, pulls, r.Pulls, remote, published)
	}
	cfg := c.withDefaults().Policy
	for i, x := range recs {
		pcg := &rand.PCG{}
		if err := pcg.UnmarshalBinary(x.state); err != nil {
			t.Fatal(err)
		}
		if got := worker.Decide(x.s, cfg, rand.New(pcg)); got != x.d {
			t.Fatalf("decision %d: the model did %+v, worker.Decide says %+v", i, x.d, got)
		}
	}
	t.Logf("%d decisions (%d remote pulls), %d notices; first help %.2fs", len(recs), remote, published, r.Fault.FirstHelpS)

	// A stand-in that never helps: the same run, no help at all.
	c.hooks = &modelHooks{decide: func(s worker.Situation, p worker.PolicyConfig, rng *rand.Rand) worker.Decision {
		p.LocalOnly = true
		return worker.Decide(s, p, rng)
	}}
	alone := runModel(t, c)
	if alone.OtherIDC != 0 || alone.Fault.FirstHelpS != -1 || r.OtherIDC == 0 || alone.PeakBacklog <= r.PeakBacklog {
		t.Fatalf("local-only stand-in: other IDC %.3f (real %.3f), first help %v, peak %d (real %d)",
			alone.OtherIDC, r.OtherIDC, alone.Fault.FirstHelpS, alone.PeakBacklog, r.PeakBacklog)
	}
}

// No fault: every task runs on its own host. Pools lost: other IDCs help
// within a few seconds, the backlog returns to zero, nothing is lost.
func TestModelInvariants(t *testing.T) {
	calm := runModel(t, smallModel(t, 45, FaultNone, 5))
	if !calm.Drained || calm.Completed != calm.Enqueued || calm.Enqueued < 45*20*8 || calm.Local <= 0.99 || calm.Fault != nil {
		t.Fatalf("no fault: %+v", calm)
	}
	for _, n := range calm.Notices {
		if n.Tier == "global" && n.Delivered-n.Heartbeats != 0 {
			t.Errorf("no fault, yet %d global queue notices", n.Delivered-n.Heartbeats)
		}
	}

	lost := runModel(t, smallModel(t, 45, FaultPoolsLost, 5))
	f := lost.Fault
	during := phase(t, lost, "sh pools lost")
	if !lost.Drained || lost.Completed != lost.Enqueued || lost.Stranded != 0 || f == nil ||
		f.FirstHelpS < 0 || f.FirstHelpS > 5 || f.Helpers == 0 || f.NodesHelped == 0 || during.OtherIDC == 0 || during.Local == 1 {
		t.Fatalf("pools lost: %+v\nfault %+v\nphase %+v", lost, f, during)
	}
	// Helping starts once the stalled nodes announce on the global tier
	// (backlog.TierPolicy.Stall): not before, and well within a second.
	if stall := backlog.DefaultPolicies[backlog.TierGlobal].Stall.Seconds(); f.FirstHelpS < stall || f.FirstHelpS > 0.5 {
		t.Fatalf("help after %.2fs: want between the stall (%.2fs) and 0.5s", f.FirstHelpS, stall)
	}
	if lost.PeakBacklog == 0 || phase(t, lost, "normal").OtherIDC != 0 {
		t.Fatalf("pools lost: peak backlog %d, normal phase %+v", lost.PeakBacklog, phase(t, lost, "normal"))
	}

	// Degraded: 20x slower, half the tasks fail and come back after the
	// retry backoff. The degraded IDC's pools yield (worker's health):
	// most of its work is done by other IDCs, and few tasks wait for a
	// retry, so the phase's p99 stays near the backoff, not a multiple.
	slow := runModel(t, smallModel(t, 24, FaultDegrade, 5))
	deg := phase(t, slow, "sh degraded")
	if !slow.Drained || slow.Completed != slow.Enqueued || slow.Fault == nil || slow.Fault.Action != "degrade" ||
		slow.Retries == 0 || deg.Retries == 0 || deg.OtherIDC < 0.2 || deg.P99Ms > 1500 {
		t.Fatalf("degrade: %+v\nphase %+v", slow, deg)
	}
	t.Logf("degraded phase: %d retries, other IDC %.1f%%, p99 %.0f ms", deg.Retries, 100*deg.OtherIDC, deg.P99Ms)
}

// Heartbeats applied to the views: they count against the tiers' rate
// caps as in the real watcher, and the copy of the view still matches.
func TestModelHeartbeatsApplied(t *testing.T) {
	c := smallModel(t, 30, FaultPoolsLost, 9)
	plain := runModel(t, c)
	c.ApplyHeartbeats = true
	hb := runModel(t, c)
	var a, b uint64
	for i := range hb.Notices {
		a += plain.Notices[i].Accepted + plain.Notices[i].Dropped
		b += hb.Notices[i].Accepted + hb.Notices[i].Dropped
	}
	if b <= a || hb.Notices[2].Heartbeats != plain.Notices[2].Heartbeats {
		t.Fatalf("applied notices %d (heartbeats too) vs %d; global heartbeats %d vs %d", b, a, hb.Notices[2].Heartbeats, plain.Notices[2].Heartbeats)
	}
}

func TestModelConfigErrors(t *testing.T) {
	s := Default()
	if _, err := ModelFromScenario(s, 10, 3, time.Minute, 20, "meteor"); err == nil || !strings.Contains(err.Error(), "meteor") {
		t.Fatalf("bad fault: %v", err)
	}
	if _, err := ModelFromScenario(s, 10, 0, time.Minute, 20, FaultNone); err == nil {
		t.Fatal("0 IDCs accepted")
	}
	c, err := ModelFromScenario(s, 2, 3, time.Minute, 20, FaultNone)
	if err != nil {
		t.Fatal(err)
	}
	c.Slots, c.Filter = 0, "chatty"
	c.Timeline = append(c.Timeline, Event{At: Duration(time.Second), Action: "kill-node", IDC: "sh"}, Event{At: Duration(2 * time.Second), Action: "degrade", IDC: "mars", Slowdown: 2})
	c.Handler.ErrorRate = 1.5
	_, err = RunModel(context.Background(), c, nil)
	for _, want := range []string{"model hosts", "model filter", "timeline[1].action", "kill-node", "timeline[2].idc", "mars", "handler.error_rate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
	// More IDCs than the scenario names.
	c, err = ModelFromScenario(s, 10, 5, time.Minute, 20, FaultNone)
	if err != nil || strings.Join(c.IDCs, ",") != "sh,sz,tj,idc4,idc5" {
		t.Fatalf("5 IDCs: %v %v", c.IDCs, err)
	}
}

// A run stops soon after its context ends (Ctrl-C, SIGTERM in the CLI) and
// reports progress while it runs, even between samples.
func TestModelStopsAndReports(t *testing.T) {
	c := smallModel(t, 600, FaultPoolsLost, 2)
	c.CheckViews = 0
	ctx, cancel := context.WithCancel(context.Background())
	var reports int
	start := time.Now()
	_, err := RunModel(ctx, c, func(p ModelProgress) {
		reports++
		if reports == 20 {
			cancel()
		}
	})
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("stopped after %s", d)
	}
}
