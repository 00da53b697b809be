package mqnode

import (
	"container/heap"
	"crypto/rand"
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// A receipt names one delivery: 128 bits from crypto/rand, drawn per
// delivery, so a receipt cannot be guessed from another (it is the only
// credential an ack, nack or extend needs). Receipts of an earlier run, or
// of a delivery whose lease expired, are simply not in the table: stale.
type receipt [16]byte

// newReceipt draws a receipt not in use (a collision of 128 random bits
// does not happen; the check costs one map lookup).
func (lt *leaseTable) newReceipt() receipt {
	for {
		var rc receipt
		_, _ = rand.Read(rc[:]) // crypto/rand.Read never fails (Go 1.24+)
		if _, taken := lt.byReceipt[rc]; !taken {
			return rc
		}
	}
}

// lease is one delivery under a visibility timeout. Lease state lives in
// memory only: after a crash every leased task is ready again.
type lease struct {
	rc       receipt
	q        *queue
	key      []byte
	task     *wirepb.Task // as stored (Attempt = failed deliveries so far)
	deadline int64        // unix ms
	dur      int64        // ms, for EXTEND with no length
	start    int64        // unix ms of the delivery
	worker   string       // holder: worker id "@" its mesh membership (see Node.WorkerMember)
	idx      int
}

// started is when the lease began (for a lease from before start was
// kept: its deadline less its length).
func (l *lease) started() int64 {
	if l.start > 0 {
		return l.start
	}
	return l.deadline - l.dur
}

type leaseTable struct {
	s         *store
	mu        sync.Mutex
	byReceipt map[receipt]*lease
	h         leaseHeap
	kick      chan struct{}
}

func newLeaseTable(s *store) *leaseTable {
	return &leaseTable{s: s, byReceipt: map[receipt]*lease{}, kick: make(chan struct{}, 1)}
}

// add leases e; called with q.mu held.
func (lt *leaseTable) add(q *queue, e *entry, dur time.Duration, worker string, now int64) *wirepb.Delivery {
	lt.mu.Lock()
	rc := lt.newReceipt()
	l := &lease{rc: rc, q: q, key: e.key, task: e.task, deadline: now + dur.Milliseconds(), dur: dur.Milliseconds(), worker: worker, start: now}
	lt.byReceipt[rc] = l
	heap.Push(&lt.h, l)
	first := l.idx == 0
	lt.mu.Unlock()
	if first {
		lt.poke()
	}
	return &wirepb.Delivery{Task: deliveredTask(e.task), Receipt: rc[:], LeaseDeadlineUnixMs: l.deadline}
}

func (lt *leaseTable) poke() {
	select {
	case lt.kick <- struct{}{}:
	default:
	}
}

// take removes and returns the lease of a receipt, or nil if it is stale.
func (lt *leaseTable) take(b []byte) *lease {
	if len(b) != len(receipt{}) {
		return nil
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	l := lt.byReceipt[receipt(b)]
	if l != nil {
		delete(lt.byReceipt, l.rc)
		heap.Remove(&lt.h, l.idx)
	}
	return l
}

// restore puts back a lease taken for an operation whose write failed.
func (lt *leaseTable) restore(l *lease) {
	lt.mu.Lock()
	lt.byReceipt[l.rc] = l
	heap.Push(&lt.h, l)
	lt.mu.Unlock()
	lt.poke()
}

// extend moves a lease's deadline to now+dur (dur 0: its original length).
func (lt *leaseTable) extend(b []byte, dur int64, now int64) (int64, bool) {
	if len(b) != len(receipt{}) {
		return 0, false
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	l := lt.byReceipt[receipt(b)]
	if l == nil {
		return 0, false
	}
	if dur <= 0 {
		dur = l.dur
	}
	l.deadline = now + dur
	heap.Fix(&lt.h, l.idx)
	return l.deadline, true
}

// expireWorker ends every lease held by holder now (the worker is known to
// be dead); its tasks become ready again. Returns how many.
func (lt *leaseTable) expireWorker(holder, worker string) int {
	lt.mu.Lock()
	var gone []*lease
	for _, l := range lt.byReceipt {
		if l.worker == holder {
			gone = append(gone, l)
		}
	}
	for _, l := range gone {
		delete(lt.byReceipt, l.rc)
		heap.Remove(&lt.h, l.idx)
	}
	lt.mu.Unlock()
	for _, l := range gone {
		lt.s.expire(l, "worker "+worker+" left the mesh")
	}
	return len(gone)
}

func (lt *leaseTable) count() int {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return len(lt.byReceipt)
}

// run expires leases at their deadlines until the store stops.
func (lt *leaseTable) run() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := lt.s.nowMs()
		var due []*lease
		next := int64(0)
		lt.mu.Lock()
		for len(lt.h) > 0 && lt.h[0].deadline <= now && len(due) < 1024 {
			l := heap.Pop(&lt.h).(*lease)
			delete(lt.byReceipt, l.rc)
			due = append(due, l)
		}
		if len(lt.h) > 0 {
			next = lt.h[0].deadline
		}
		lt.mu.Unlock()
		for _, l := range due {
			lt.s.th.Outcome(l.q.name, false) // a handler that timed out failed
			lt.s.expire(l, "lease expired")
		}
		if len(due) == 1024 {
			continue
		}
		wait := time.Hour
		if next != 0 {
			wait = time.Duration(next-now) * time.Millisecond
		}
		t.Reset(wait)
		select {
		case <-lt.s.stopBg:
			return
		case <-lt.kick:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-t.C:
		}
	}
}

type leaseHeap []*lease

func (h leaseHeap) Len() int           { return len(h) }
func (h leaseHeap) Less(i, j int) bool { return h[i].deadline < h[j].deadline }
func (h leaseHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *leaseHeap) Push(x any)        { l := x.(*lease); l.idx = len(*h); *h = append(*h, l) }
func (h *leaseHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.idx = -1
	return l
}

// deliveredTask is the wire form of a stored task for one delivery: the
// attempt number counts this delivery.
func deliveredTask(t *wirepb.Task) *wirepb.Task {
	return &wirepb.Task{
		Id: t.Id, Queue: t.Queue, Payload: t.Payload, Headers: t.Headers,
		CreatedUnixMs: t.CreatedUnixMs, Attempt: t.Attempt + 1,
		NotBeforeUnixMs: t.NotBeforeUnixMs, ExpiresUnixMs: t.ExpiresUnixMs,
		MaxAttempts: t.MaxAttempts, LastError: t.LastError, DedupKey: t.DedupKey, Producer: t.Producer,
	}
}
