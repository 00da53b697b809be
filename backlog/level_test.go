package backlog

import (
	"testing"
	"time"
)

func TestDecideHysteresisAndRate(t *testing.T) {
	p := TierPolicy{High: 10, Low: 3, MinInterval: 100 * time.Millisecond, Heartbeat: time.Second}
	var st QueueState
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	steps := []struct {
		ms    int
		ready uint64
		send  bool
		level uint32
	}{
		{0, 5, false, 0},    // below High: nothing
		{10, 10, true, 1},   // crossing in: at once
		{20, 25, false, 2},  // level 2 but inside MinInterval
		{110, 25, true, 2},  // after MinInterval: sent
		{120, 4, false, 1},  // above Low: still in backlog, level 1, rate-limited
		{125, 3, true, 0},   // crossing out: at once, even inside MinInterval
		{130, 9, false, 0},  // below High again: nothing (hysteresis)
		{140, 10, true, 1},  // crossing in
		{1200, 10, true, 1}, // heartbeat refresh while in backlog
	}
	for _, s := range steps {
		send, level, _ := p.Decide(&st, s.ready, 0, at(s.ms))
		if send != s.send || (send && level != s.level) {
			t.Fatalf("at %dms ready %d: send=%v level=%d, want send=%v level=%d", s.ms, s.ready, send, level, s.send, s.level)
		}
	}
}

// TestBurstNoticeBound: a burst of 100,000 enqueues over 2 s, observed every
// 20 ms, produces at most 1 crossing + one change per MinInterval + one
// heartbeat per Heartbeat on a tier: for the host tier (100 ms, 1 s) at most
// 1 + 20 + 2 = 23 notices; the bound scales with time, not with enqueues.
func TestBurstNoticeBound(t *testing.T) {
	for _, tier := range Tiers {
		p := DefaultPolicies[tier]
		var st QueueState
		t0 := time.Unix(1000, 0)
		sent := 0
		const dur, poll = 2 * time.Second, 20 * time.Millisecond
		for el := time.Duration(0); el <= dur; el += poll {
			ready := uint64(100000 * el / dur)
			if s, _, _ := p.Decide(&st, ready, 0, t0.Add(el)); s {
				sent++
			}
		}
		bound := 1 + int(dur/p.MinInterval) + int(dur/p.Heartbeat) + 1
		t.Logf("tier %s: %d notices for a 100,000-task burst over %s (bound %d)", tier, sent, dur, bound)
		if sent > bound || sent == 0 {
			t.Errorf("tier %s: %d notices, bound %d", tier, sent, bound)
		}
	}
}

func TestLevel(t *testing.T) {
	p := TierPolicy{High: 10}
	for ready, want := range map[uint64]uint32{5: 1, 10: 1, 19: 1, 20: 2, 40: 3, 10240: 11} {
		if got := p.Level(ready); got != want {
			t.Errorf("Level(%d) = %d, want %d", ready, got, want)
		}
	}
}

// TestDecideAge: a few tasks nobody takes are announced once they are old,
// and the queue leaves the backlog state only when drained and young.
func TestDecideAge(t *testing.T) {
	p := DefaultPolicies[TierIDC]
	var st QueueState
	t0 := time.Unix(1000, 0)
	if s, _, _ := p.Decide(&st, 3, 100*time.Millisecond, t0); s {
		t.Fatal("3 young tasks announced on the IDC tier")
	}
	if s, lvl, _ := p.Decide(&st, 3, 1500*time.Millisecond, t0.Add(time.Second)); !s || lvl == 0 {
		t.Fatal("3 tasks waiting 1.5s not announced")
	}
	if s, _, _ := p.Decide(&st, 1, 1200*time.Millisecond, t0.Add(1100*time.Millisecond)); s {
		t.Fatal("left the backlog state with an old task still waiting")
	}
	if s, lvl, _ := p.Decide(&st, 0, 0, t0.Add(1200*time.Millisecond)); !s || lvl != 0 {
		t.Fatal("drained queue not announced")
	}
}
