package backlog

import (
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/backlog/backlogpb"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func notice(node, q string, ready uint64, seq uint64) *backlogpb.Notice {
	return &backlogpb.Notice{Idc: "a", Node: node, Queue: q, Ready: ready, Level: 1, Seq: seq, Incarnation: 1}
}

func TestViewApplyExpireForget(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	v := NewView(c.now)
	v.SetFilter(TierIDC, &TierFilter{MinBacklog: 5, StaleAfter: 3 * time.Second})
	v.Apply(TierIDC, notice("n1", "q", 50, 1))
	v.Apply(TierIDC, notice("n2", "q", 3, 2)) // below MinBacklog: not worth hearing
	if es := v.Entries(); len(es) != 1 || es[0].Node != "n1" || es[0].Ready != 50 {
		t.Fatalf("entries: %+v", es)
	}
	// An older notice does not overwrite a newer one.
	if v.Apply(TierIDC, notice("n1", "q", 7, 0)) {
		t.Fatal("out-of-order notice accepted")
	}
	// A pull reply corrects the figure at once.
	v.Correct("a", "n1", "q", 12)
	if es := v.Entries(); es[0].Ready != 12 || !es[0].Corrected {
		t.Fatalf("after correction: %+v", es)
	}
	v.Correct("a", "n1", "q", 0)
	if es := v.Entries(); len(es) != 1 || es[0].Ready != 0 || !es[0].Corrected {
		t.Fatalf("an empty pull reply: %+v", es)
	}
	// The node's own "no backlog" notice removes it.
	end := notice("n1", "q", 0, 2)
	end.Level = 0
	v.Apply(TierIDC, end)
	if len(v.Entries()) != 0 {
		t.Fatal("entry kept after the node announced the end of its backlog")
	}
	// Staleness.
	v.Apply(TierIDC, notice("n1", "q", 50, 3))
	c.add(10 * time.Millisecond)
	c.add(2 * time.Second)
	if len(v.Entries()) != 1 {
		t.Fatal("expired too early")
	}
	c.add(2 * time.Second)
	if len(v.Entries()) != 0 || v.Stats().Expired != 1 {
		t.Fatalf("stale entry kept: %+v", v.Stats())
	}
	// Gossip says the node failed.
	v.Apply(TierIDC, notice("n1", "q", 50, 4))
	v.Apply(TierIDC, notice("n1", "r", 60, 5))
	v.ForgetNode("a", "n1")
	if len(v.Entries()) != 0 || !v.NodeHeard("a", "n1").IsZero() {
		t.Fatal("forgotten node still in the view")
	}
	// A restarted node (new incarnation) replaces what was known of it.
	v.Apply(TierIDC, notice("n3", "q", 50, 100))
	n := notice("n3", "r", 40, 1)
	n.Incarnation = 2
	v.Apply(TierIDC, n)
	if es := v.Entries(); len(es) != 1 || es[0].Queue != "r" {
		t.Fatalf("after a restart of n3: %+v", es)
	}
}

func TestViewLevelZeroAndNearerTier(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	v := NewView(c.now)
	v.Apply(TierHost, notice("n1", "q", 30, 1))
	// The global tier says "below my threshold" with 30 ready: the host
	// tier's entry stays.
	g := notice("n1", "q", 30, 2)
	g.Level = 0
	v.Apply(TierGlobal, g)
	if es := v.Entries(); len(es) != 1 || es[0].Ready != 30 {
		t.Fatalf("entries: %+v", es)
	}
	h := notice("n1", "q", 0, 3)
	h.Level = 0
	v.Apply(TierHost, h)
	if len(v.Entries()) != 0 {
		t.Fatal("entry kept after the node said 0 ready")
	}
}

func TestViewRateCap(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	v := NewView(c.now)
	v.SetFilter(TierGlobal, &TierFilter{MaxRate: 5})
	accepted := 0
	for i := 0; i < 100; i++ {
		if v.Apply(TierGlobal, notice("n1", "q", 100, uint64(i+1))) {
			accepted++
		}
		c.add(10 * time.Millisecond) // 100 notices/s offered for 1 s
	}
	if accepted < 5 || accepted > 11 {
		t.Fatalf("accepted %d of 100 notices at a cap of 5/s over 1s", accepted)
	}
	if v.Stats().Dropped[TierGlobal] != uint64(100-accepted) {
		t.Fatalf("dropped count %+v", v.Stats())
	}
}

// TestSubscribeTiersDropsUnsubscribedAtOnce: switching the subscribed tiers
// removes the entries learnt on the tiers dropped (they would otherwise
// never expire: StaleAfter belongs to a filter no longer in force), keeps
// the others, and ignores late notices of the dropped tiers.
func TestSubscribeTiersDropsUnsubscribedAtOnce(t *testing.T) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	v := NewView(c.now)
	var all [NumTiers]*TierFilter
	for _, tr := range Tiers {
		all[tr] = &TierFilter{MinBacklog: 1, StaleAfter: time.Hour}
	}
	v.SubscribeTiers(all)
	v.Apply(TierHost, notice("own", "q", 5, 1))
	v.Apply(TierGlobal, notice("far", "q", 50, 1))
	if n := len(v.Entries()); n != 2 {
		t.Fatalf("%d entries, want 2", n)
	}
	var local [NumTiers]*TierFilter
	local[TierHost] = all[TierHost]
	v.SubscribeTiers(local)
	if es := v.Entries(); len(es) != 1 || es[0].Node != "own" {
		t.Fatalf("after the switch to the host tier only: %+v", es)
	}
	if v.Apply(TierGlobal, notice("far", "q", 60, 2)) {
		t.Fatal("a late notice of an unsubscribed tier was accepted")
	}
	if es := v.Entries(); len(es) != 1 {
		t.Fatalf("late notice came back into the view: %+v", es)
	}
	v.AllowTiers(TierGlobal)
	if !v.Apply(TierGlobal, notice("far", "q", 60, 3)) {
		t.Fatal("notice of a newly allowed tier ignored")
	}
	if got := v.Stats().Unsubscribed; got != 2 {
		t.Fatalf("unsubscribed count %d, want 2 (one entry dropped, one late notice)", got)
	}
}
