package mqnode

import (
	"errors"
	"os"
	"path/filepath"
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

// Drill on a real full disk: the buddy's store is on a 160 MiB tmpfs with
// 96 MiB of ballast; the primary enqueues (sync) until its enqueues fail.
// The buddy (in this process: a Badger fault would kill the test) refuses
// with DISK_FULL, stays up with the copy it holds, and once the ballast is
// removed the primary is replicated again. The new epoch copies everything
// again before Badger reclaims the old copy's space, so the room freed
// must hold a second copy (16 MiB did not: the buddy refused the copy).
func TestReplBuddyDiskFullDrill(t *testing.T) {
	if testing.Short() {
		t.Skip("disk-full drill skipped in -short mode")
	}
	mnt := mountTmpfs(t, "160m")
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 96<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	a, b := startPair(t, func(c *Config) {
		smallStore(c)
		c.Buddy.SyncTimeout = 500 * time.Millisecond
		c.Buddy.TakeoverAfter = time.Hour
	}, func(c *Config) {
		smallStore(c)
		c.DataDir = filepath.Join(mnt, "data")
		c.Buddy.TakeoverAfter = time.Hour
	})
	ca := client(t, a)
	payload := make([]byte, 8<<10)
	acked := 0
	var fullErr error
	for i := 0; i < 2000 && fullErr == nil; i++ {
		items := make([]*EnqueueItem, 8)
		for j := range items {
			items[j] = &EnqueueItem{Payload: payload}
		}
		_, err := ca.Enqueue(ctxT(t), "jobs", items...)
		switch {
		case err == nil:
			acked += len(items)
		case errors.Is(err, ErrUnavailable):
			fullErr = err
		default:
			t.Fatalf("enqueue %d: %v", i, err)
		}
	}
	if fullErr == nil || !strings.Contains(fullErr.Error(), "disk full") {
		t.Fatalf("after %d acknowledged tasks: %v, want UNAVAILABLE naming the buddy's full disk", acked, fullErr)
	}
	t.Logf("buddy full after %d acknowledged tasks: %v", acked, fullErr)
	pid := a.rp.self.ID()
	if n := shadowCount(t, b, pid); n < int64(acked) {
		t.Fatalf("full buddy holds %d records, %d were acknowledged as replicated", n, acked)
	}
	if _, _, err := client(t, b).Stats(ctxT(t), ""); err != nil {
		t.Fatalf("buddy on a full disk: %v", err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitReplicated(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	_, qs, err := ca.Stats(ctxT(t), "jobs")
	if err != nil {
		t.Fatal(err)
	}
	if n := shadowCount(t, b, pid); n != int64(qs[0].Ready) {
		t.Fatalf("after space returned the buddy holds %d records, the primary %d", n, qs[0].Ready)
	}
}
