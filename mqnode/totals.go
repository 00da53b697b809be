package mqnode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Durable counters. Every queue's totals (enqueued, acked, nacked, expired
// leases, dead-lettered) are kept in Badger under
//
//	c|len|queue   totals: version byte, then 5 uvarints
//
// written every totalsEvery when they changed and once more at stop, and
// read back at start: they survive restarts. A crash (kill -9) loses at
// most the last totalsEvery of counts; the tasks themselves are never
// affected (the counters only count).
const (
	pfxTotals     = 'c'
	totalsVersion = 1
	totalsEvery   = time.Second
)

// queueTotals are one queue's lifetime counters.
type queueTotals struct {
	Enqueued, Acked, Nacked, Expired, Dead uint64
}

func totalsKey(queue string) []byte { return queuePrefix(pfxTotals, queue) }

func (t queueTotals) encode() []byte {
	b := []byte{totalsVersion}
	for _, v := range []uint64{t.Enqueued, t.Acked, t.Nacked, t.Expired, t.Dead} {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

// decodeTotals parses a stored totals record (disk: checked, never trusted).
func decodeTotals(b []byte) (queueTotals, error) {
	if len(b) == 0 || b[0] != totalsVersion {
		return queueTotals{}, fmt.Errorf("%w: totals record: unknown version", ErrStorage)
	}
	b = b[1:]
	var vs [5]uint64
	for i := range vs {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return queueTotals{}, fmt.Errorf("%w: totals record: truncated at field %d", ErrStorage, i)
		}
		vs[i], b = v, b[n:]
	}
	if len(b) != 0 {
		return queueTotals{}, fmt.Errorf("%w: totals record: %d trailing bytes", ErrStorage, len(b))
	}
	return queueTotals{Enqueued: vs[0], Acked: vs[1], Nacked: vs[2], Expired: vs[3], Dead: vs[4]}, nil
}

// totals reads the queue's counters now.
func (q *queue) totals() queueTotals {
	q.c.enqueued.mu.Lock()
	enq := q.c.enqueued.total
	q.c.enqueued.mu.Unlock()
	q.c.acked.mu.Lock()
	ack := q.c.acked.total
	q.c.acked.mu.Unlock()
	return queueTotals{Enqueued: enq, Acked: ack, Nacked: q.c.nacked.Load(), Expired: q.c.expired.Load(), Dead: q.c.deadTotal.Load()}
}

// restoreTotals adds stored totals to the queue's counters (at load,
// before anything counts).
func (q *queue) restoreTotals(t queueTotals) {
	q.c.enqueued.mu.Lock()
	q.c.enqueued.total += t.Enqueued
	q.c.enqueued.mu.Unlock()
	q.c.acked.mu.Lock()
	q.c.acked.total += t.Acked
	q.c.acked.mu.Unlock()
	q.c.nacked.Add(t.Nacked)
	q.c.expired.Add(t.Expired)
	q.c.deadTotal.Add(t.Dead)
}

// loadTotals restores q's stored totals, if any. A damaged record is
// logged and the queue counts from zero (the record is replaced at the
// next save); it never stops the node.
func (s *store) loadTotals(txn *badger.Txn, q *queue) {
	it, err := txn.Get(totalsKey(q.name))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return
	}
	var t queueTotals
	if err == nil {
		var b []byte
		if b, err = it.ValueCopy(nil); err == nil {
			t, err = decodeTotals(b)
		}
	}
	if err != nil {
		s.log.Warn("queue totals not restored; counting from zero", "queue", q.name, "err", err)
		return
	}
	q.restoreTotals(t)
}

// saveTotals writes the totals of every queue whose totals differ from
// saved (nil: every queue) and records them in saved.
func (s *store) saveTotals(ctx context.Context, saved map[string]queueTotals) error {
	s.qmu.RLock()
	type rec struct {
		name string
		t    queueTotals
	}
	var recs []rec
	for name, q := range s.queues {
		t := q.totals()
		if saved != nil && saved[name] == t {
			continue
		}
		recs = append(recs, rec{name, t})
	}
	s.qmu.RUnlock()
	if len(recs) == 0 {
		return nil
	}
	err := s.w.do(ctx, &writeOp{prepare: func(w *wtx) error {
		for _, r := range recs {
			w.set(totalsKey(r.name), r.t.encode())
		}
		return nil
	}})
	if err == nil && saved != nil {
		for _, r := range recs {
			saved[r.name] = r.t
		}
	}
	return err
}

// runTotals saves the totals every totalsEvery until the store stops.
func (s *store) runTotals() {
	saved := map[string]queueTotals{}
	t := time.NewTicker(totalsEvery)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-s.stopBg:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.saveTotals(ctx, saved)
		cancel()
		if err != nil && !warned && !errors.Is(err, ErrClosed) {
			s.log.Warn("queue totals not saved", "err", err)
			warned = true
		}
	}
}
