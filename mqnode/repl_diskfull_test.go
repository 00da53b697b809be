package mqnode

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// shadowCount is how many records of primary pid buddy b holds on disk.
func shadowCount(t *testing.T, b *Node, pid string) int64 {
	t.Helper()
	var n int64
	if err := b.st.db.View(func(txn *badger.Txn) error {
		n = countKeys(txn, primaryPrefix(pfxShadow, pid))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// A buddy below its disk reserve refuses replicated writes with DISK_FULL
// (it used to write through the reserve and die on a full disk): it keeps
// running and keeps the copy it holds; the primary's sync enqueue is not
// acknowledged (partition_policy block: UNAVAILABLE after sync_timeout,
// naming the buddy's full disk); once space returns, replication resumes
// with a full copy.
func TestReplBuddyDiskFullRefusesBatches(t *testing.T) {
	const syncTimeout = 500 * time.Millisecond
	a, b := startPair(t, func(c *Config) {
		c.Buddy.SyncTimeout = syncTimeout
		c.Buddy.TakeoverAfter = time.Hour
	}, func(c *Config) { c.Buddy.TakeoverAfter = time.Hour })
	ca := client(t, a)
	replEnqueueN(t, ca, "jobs", 20)
	pid := a.rp.self.ID()
	if n := shadowCount(t, b, pid); n != 20 {
		t.Fatalf("buddy holds %d records before, want 20", n)
	}

	d := b.st.disk
	d.reserve.Store(1 << 62) // no disk has that much free
	d.lastCheck.Store(0)     // the next admit re-reads free space
	t0 := time.Now()
	_, err := ca.Enqueue(ctxT(t), "jobs", &EnqueueItem{Payload: []byte("during")})
	took := time.Since(t0)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("sync enqueue while the buddy is below its reserve: %v, want UNAVAILABLE naming the buddy's full disk", err)
	}
	if took > syncTimeout+3*time.Second {
		t.Fatalf("the refused enqueue took %s, sync_timeout is %s", took, syncTimeout)
	}
	if st := a.Replication(); st.State == ReplReplicated || st.FailedEnqueues == 0 || !strings.Contains(st.Alarm, "disk full") {
		t.Fatalf("primary while its buddy is full: state %s, failed %d, alarm %q", st.State, st.FailedEnqueues, st.Alarm)
	}
	// On the wire: a batch the buddy would otherwise take answers DISK_FULL.
	held, err := b.rp.loadHeld(pid)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.rp.request(ctxT(t), b.rp.self, opReplShip, &wirepb.ReplRequest{PrimaryIdc: a.rp.self.IDC, Primary: a.rp.self.Name,
		Epoch: held.Epoch, Seq: held.AppliedSeq + 1, Records: []*wirepb.ReplRecord{{Key: taskKey("jobs", 1<<40, 1), Value: []byte("x")}}})
	if CodeOf(err) != wirepb.Code_DISK_FULL {
		t.Fatalf("ship to a buddy below its reserve: %v (code %s), want DISK_FULL", err, CodeOf(err))
	}
	// The primary keeps retrying (begin is refused too): the buddy keeps
	// the copy it held and answers its own clients.
	eventually(t, 5*time.Second, "refusals", func() bool { return d.refusedTotal.Load() >= 3 })
	if n := shadowCount(t, b, pid); n != 20 {
		t.Fatalf("buddy holds %d records while full, want the 20 it had", n)
	}
	if _, _, err := client(t, b).Stats(ctxT(t), ""); err != nil {
		t.Fatalf("buddy while full: %v", err)
	}

	d.reserve.Store(0)
	d.lastCheck.Store(0)
	if err := a.WaitReplicated(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Enqueue(ctxT(t), "jobs", &EnqueueItem{Payload: []byte("after")}); err != nil {
		t.Fatalf("enqueue once the buddy has room: %v", err)
	}
	_, qs, err := ca.Stats(ctxT(t), "jobs")
	if err != nil {
		t.Fatal(err)
	}
	if n := shadowCount(t, b, pid); n != int64(qs[0].Ready) || n != 22 {
		t.Fatalf("after space returned the buddy holds %d records, the primary %d, want 22", n, qs[0].Ready)
	}
}
