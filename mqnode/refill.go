package mqnode

import (
	"github.com/dgraph-io/badger/v4"
)

// Refilling a queue's ready window without disk I/O under queue.mu.
//
// A refill has three steps. begin (under q.mu) snapshots what the read
// needs: the cursor, the scan horizon and the room left in the window; it
// marks the queue as refilling, so at most one refill per queue is in
// flight, and clears dirty. read (no lock) pages keys past the cursor from
// Badger. swap (under q.mu) appends what was read to the window, moves the
// cursor and records what the read found (a delayed head to arm the timer
// for, a write group in flight, more keys than room).
//
// Why nothing is lost or delivered twice between read and swap: the keys a
// refill reads are all past the cursor, and nothing but a refill touches a
// key past the cursor. Leases, acks, nacks, expiries and deferred retries
// work on entries that left the window, whose keys are at or before the
// cursor; a new or re-queued task gets a new key whose readyAt is at least
// the stamp of its write group, past the horizon the read stopped at (see
// store.horizon), so the read either sees it committed or leaves it for the
// next refill. A change that commits during the read sets dirty again, so
// the next look refills once more. A queue stopped during the read drops
// what was read (its records stay on disk).
//
// Who refills: a pull that finds fewer ready tasks in the window than it
// asked for, and a refill is due, runs one itself (read outside the lock)
// or waits for the one in flight, once per look; a pull that leaves the
// window below half of ReadyBuffer, while the counters say more ready
// tasks wait on disk, starts one in the background (prefetch), so the next
// pull usually finds the window full. Stats never
// page: they come from counters, and an empty window with ready tasks
// behind it starts a background refill.

// refill is one refill in flight: its snapshot (set by begin), its result
// (set by read) and done, closed by swap.
type refill struct {
	q              *queue
	cursor         []byte
	limit, now     int64
	maxN, maxBytes int // room in the window at begin
	done           chan struct{}

	entries  []*entry
	last     []byte     // last key read (new cursor); nil = none
	moves    []*writeOp // dead-letter moves (corrupt, unreadable, expired)
	undelay  []int64    // readyAt of records read that left the ready path
	armAt    int64      // > 0: a key past the horizon is ready at this ms
	heldBack bool       // a write group in flight held ready keys back
	more     bool       // stopped because the window was full
	err      error
}

// refillDueLocked reports whether a refill would page anything in: keys
// may exist past the cursor and the window has room.
func (q *queue) refillDueLocked() bool {
	if !q.dirty || q.refilling != nil || q.stopped {
		return false
	}
	return len(q.buf) < q.s.cfg.ReadyBuffer && q.bufBytes < q.s.readyShare(q.bufBytes)
}

// beginRefillLocked starts a refill (q.mu held, refillDueLocked true).
func (q *queue) beginRefillLocked(now int64) *refill {
	maxBytes := q.s.readyShare(q.bufBytes)
	r := &refill{
		q: q, cursor: q.cursor, limit: q.s.horizon(), now: now,
		maxN: q.s.cfg.ReadyBuffer - len(q.buf), maxBytes: maxBytes - q.bufBytes,
		done: make(chan struct{}),
	}
	q.heldBack = false
	q.dirty = false
	q.refilling = r
	q.s.refills.Add(1)
	q.s.nRefills.Add(1)
	// The room is reserved in the node's budget until the swap, so
	// refills of many queues at once do not all see it free.
	q.s.bufTotal.Add(int64(max(r.maxBytes, 0)))
	return r
}

// prefetchLocked starts a background refill when one is due and the
// counters say enough ready tasks wait on disk to be worth a read (a
// quarter of the window, at most 256): a read costs about the same for 1
// task as for 1,000, so a queue where retries come ready a few at a time
// is left to the pulls' own refills, as is one whose keys past the cursor
// are all delayed or in a write group in flight.
func (q *queue) prefetchLocked(now int64) {
	q.prefetchIfLocked(now, max(1, min(q.s.cfg.ReadyBuffer/4, 256)))
}

// prefetchIfLocked starts a background refill when one is due and at
// least worth ready tasks wait on disk.
func (q *queue) prefetchIfLocked(now int64, worth int) {
	if !q.refillDueLocked() || q.readyLocked(now)-int64(len(q.buf)) < int64(worth) {
		return
	}
	r := q.beginRefillLocked(now)
	go r.run()
}

// run reads and swaps, then submits the dead-letter moves (no lock held).
func (r *refill) run() {
	r.read()
	if moves := r.swap(); len(moves) > 0 {
		if err := r.q.s.submitAll(moves); err != nil {
			r.q.s.log.Warn("dead-letter moves of a refill not submitted", "queue", r.q.name, "err", err)
		}
	}
}

// read pages ready tasks past the cursor from Badger, up to the room the
// window had at begin. No lock is held.
func (r *refill) read() {
	q := r.q
	prefix := queuePrefix(pfxTask, q.name)
	r.err = q.s.db.View(func(txn *badger.Txn) error {
		// Prefetch no more values than the window can take (a queue on a
		// small share of the budget pages one or two tasks).
		prefetch := max(1, min(64, r.maxN, r.maxBytes/(4<<10)))
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: prefetch})
		defer it.Close()
		if r.cursor == nil {
			it.Rewind()
		} else {
			it.Seek(r.cursor)
			if it.Valid() && string(it.Item().Key()) == string(r.cursor) {
				it.Next()
			}
		}
		n, bytes := 0, 0
		for ; it.Valid(); it.Next() {
			item := it.Item()
			key := item.KeyCopy(nil)
			readyAt, _, err := parseTaskKey(q.name, key)
			if err != nil {
				return err
			}
			if readyAt > r.limit {
				if readyAt > r.now {
					r.armAt = readyAt
				} else {
					r.heldBack = true // look again soon
				}
				return nil
			}
			raw, err := item.ValueCopy(nil)
			r.last = key
			if err != nil {
				// The key is there, its value is not (a cut value log):
				// dead-letter the key with the reason, do not stall the queue.
				r.undelay = append(r.undelay, readyAt)
				q.c.corrupt.Add(1)
				q.s.log.Error("task record unreadable, moved to dead letter queue", "queue", q.name, "key", key, "err", err)
				r.moves = append(r.moves, q.s.deadOp(q, key, nil, nil, "unreadable task record (value lost): "+err.Error()))
				continue
			}
			t, derr := decodeTask(raw)
			switch {
			case derr != nil:
				r.undelay = append(r.undelay, readyAt)
				q.c.corrupt.Add(1)
				q.s.log.Error("corrupt task record moved to dead letter queue", "queue", q.name, "key", key, "err", derr)
				r.moves = append(r.moves, q.s.deadOp(q, key, nil, raw, derr.Error()))
				continue
			case t.ExpiresUnixMs != 0 && t.ExpiresUnixMs <= r.now:
				r.undelay = append(r.undelay, readyAt)
				r.moves = append(r.moves, q.s.deadOp(q, key, t, nil, "expired: not consumed within its retention"))
				continue
			}
			r.entries = append(r.entries, &entry{key: key, readyAt: readyAt, task: t, size: len(raw)})
			n++
			bytes += len(raw)
			if n >= r.maxN || bytes >= r.maxBytes {
				r.more = true
				return nil
			}
		}
		return nil
	})
	if r.err != nil {
		r.err = storageErr(r.err)
	}
	if h := q.s.refillRead.Load(); h != nil {
		(*h)(q)
	}
}

// swap puts what read found into the queue under q.mu and ends the
// refill; it returns the dead-letter moves to submit (nil when the queue
// stopped meanwhile).
func (r *refill) swap() []*writeOp {
	q := r.q
	q.mu.Lock()
	defer q.mu.Unlock()
	defer q.s.refills.Done()
	defer close(r.done)
	q.refilling = nil
	q.s.bufTotal.Add(-int64(max(r.maxBytes, 0)))
	q.s.nRefills.Add(-1)
	if q.stopped {
		return nil
	}
	if r.last != nil {
		q.cursor = r.last
	}
	for _, readyAt := range r.undelay {
		q.undelayLocked(readyAt, r.now)
	}
	for _, e := range r.entries {
		q.buf = append(q.buf, e)
		q.addBuf(e.size)
	}
	switch {
	case r.err != nil || r.more:
		q.dirty = true
	case r.heldBack:
		q.dirty = true
		q.heldBack = true
		q.armLocked(r.now + 1)
	case r.armAt > 0:
		q.armLocked(r.armAt)
	}
	if r.err != nil {
		q.s.log.Warn("ready window refill failed", "queue", q.name, "err", r.err)
	}
	if len(r.entries) > 0 || r.err != nil {
		q.wakeLocked()
	}
	return r.moves
}

// refillFor makes one attempt, before a look at the window, to have max
// tasks in it: when the window holds fewer and a refill is due, it runs
// one (reading without q.mu), or waits for the one in flight if the window
// holds less than half of max. It returns
// the dead-letter moves to submit and the refill's error.
func (q *queue) refillFor(max int) ([]*writeOp, error) {
	q.mu.Lock()
	if q.stopped || len(q.buf) >= max {
		q.mu.Unlock()
		return nil, nil
	}
	if r := q.refilling; r != nil {
		short := len(q.buf)*2 < max
		q.mu.Unlock()
		if short {
			<-r.done // a window under half the pull: worth the wait
		}
		return nil, nil
	}
	if !q.refillDueLocked() {
		q.mu.Unlock()
		return nil, nil
	}
	r := q.beginRefillLocked(q.s.nowMs())
	q.mu.Unlock()
	r.read()
	return r.swap(), r.err
}
