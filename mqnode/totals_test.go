package mqnode

import (
	"testing"
)

// TestTotalsSurviveRestart: enqueued, acked, nacked and dead totals are
// the same after a graceful restart, and keep counting from there.
func TestTotalsSurviveRestart(t *testing.T) {
	r := newRestartable(t, Config{})
	ctx := ctxT(t)
	items := make([]*EnqueueItem, 10)
	for i := range items {
		items[i] = &EnqueueItem{Payload: []byte("x")}
	}
	if _, err := r.c.Enqueue(ctx, "q", items...); err != nil {
		t.Fatal(err)
	}
	ds, _, err := r.c.Pull(ctx, PullRequest{Queue: "q", MaxTasks: 6})
	if err != nil || len(ds) != 6 {
		t.Fatalf("pulled %d: %v", len(ds), err)
	}
	kinds := []AckKind{AckAck, AckAck, AckAck, AckAck, AckNack, AckDead}
	for i, d := range ds {
		if _, err := r.c.AckOne(ctx, &AckItem{Receipt: d.Receipt, Kind: kinds[i]}); err != nil {
			t.Fatal(err)
		}
	}
	totals := func() [5]uint64 {
		_, qs, err := r.c.Stats(ctx, "q")
		if err != nil || len(qs) != 1 {
			t.Fatalf("stats: %v %v", qs, err)
		}
		q := qs[0]
		return [5]uint64{q.EnqueuedTotal, q.AckedTotal, q.NackedTotal, q.ExpiredLeasesTotal, q.DeadTotal}
	}
	before := totals()
	if before != [5]uint64{10, 4, 1, 0, 1} {
		t.Fatalf("totals before the restart: %v", before)
	}
	r.stop()
	r.start()
	if got := totals(); got != before {
		t.Fatalf("totals after the restart %v, want %v", got, before)
	}
	if _, err := r.c.Enqueue(ctx, "q", items[:2]...); err != nil {
		t.Fatal(err)
	}
	if got := totals(); got[0] != 12 {
		t.Fatalf("enqueued total %d after 2 more, want 12", got[0])
	}
}

func FuzzDecodeTotals(f *testing.F) {
	f.Add(queueTotals{Enqueued: 1, Acked: 2, Nacked: 3, Expired: 4, Dead: 1 << 40}.encode())
	f.Add([]byte{totalsVersion})
	f.Add([]byte{9, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeTotals(b)
		if err != nil {
			return
		}
		if w, err := decodeTotals(v.encode()); err != nil || w != v {
			t.Fatalf("round trip: %v %v", w, err)
		}
	})
}
