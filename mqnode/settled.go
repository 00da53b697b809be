package mqnode

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Settled tasks kept for replay.
//
// A queue with keep_settled > 0 keeps every task it acks or dead-letters,
// written in the same transaction as the settlement, under
//
//	S|len|queue|settled ms (8, big endian)|seq (8)
//
// a keyspace of its own: pulls page task keys (prefix 't') only, so they
// never walk these. Each record carries a Badger TTL of keep_settled:
// Badger stops returning it then and compaction drops it, after which
// value-log GC reclaims its bytes, so disk is bounded by the window. Keys
// sort by settle time, so a replay of a span seeks straight to its start.
const pfxSettled = 'S'

// Outcomes of a kept settled task.
const (
	outcomeAcked = "acked"
	outcomeDead  = "dead"
)

func settledKey(queue string, settledAt int64, seq uint64) []byte {
	b := binary.BigEndian.AppendUint64(queuePrefix(pfxSettled, queue), uint64(settledAt))
	return binary.BigEndian.AppendUint64(b, seq)
}

// settledKeyFloor is the smallest settled key of queue with time >= t.
func settledKeyFloor(queue string, t int64) []byte {
	return binary.BigEndian.AppendUint64(queuePrefix(pfxSettled, queue), uint64(max(t, 0)))
}

// settledKeyTime returns the settle time of a settled key of queue.
func settledKeyTime(queue string, k []byte) (int64, error) {
	p := 2 + len(queue)
	if len(k) != p+16 || k[0] != pfxSettled || int(k[1]) != len(queue) || string(k[2:p]) != queue {
		return 0, fmt.Errorf("%w: malformed settled key %x", ErrInternal, k)
	}
	return int64(binary.BigEndian.Uint64(k[p:])), nil
}

// keepSettled records t, just settled with outcome, when q keeps settled
// tasks; it is part of the settlement's transaction. t may be nil (a
// corrupt record has no task to keep).
func (w *wtx) keepSettled(q *queue, t *wirepb.Task, outcome string) error {
	keep := q.cfg.KeepSettled.Truncate(time.Second)
	if keep <= 0 || t == nil {
		return nil
	}
	seq, err := w.nextSeq()
	if err != nil {
		return err
	}
	now := w.stamp()
	frame, err := encodeFrame(&wirepb.SettledTask{Task: t, Outcome: outcome, SettledUnixMs: now})
	if err != nil {
		return err
	}
	key := settledKey(q.name, now, seq)
	w.setTTL(key, frame, keep)
	// Badger expires at whole seconds: now + keep, rounded down.
	exp := time.UnixMilli(now).Add(keep).Unix()
	size := int64(len(key) + len(frame))
	w.effect(effect{q: q, onCommit: func() { q.kept.add(exp, keep, 1, size) }})
	return nil
}

// keptSettled counts a queue's kept settled tasks and their bytes by when
// they expire, so the count falls as Badger's TTL expires them without any
// scan. Buckets are keep/1024 wide (at least 1 s): at most ~1024 per queue,
// and a record leaves the count at most one bucket width late.
type keptSettled struct {
	mu      sync.Mutex
	buckets map[int64]keptBucket // end of the bucket (unix s) → totals
}

type keptBucket struct{ n, bytes int64 }

func (k *keptSettled) add(expUnix int64, keep time.Duration, n, bytes int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.buckets == nil {
		k.buckets = map[int64]keptBucket{}
	}
	w := max(int64(keep/time.Second)/1024, 1)
	end := (expUnix + w - 1) / w * w
	b := k.buckets[end]
	b.n += n
	b.bytes += bytes
	k.buckets[end] = b
}

// held returns the records kept and their bytes at nowMs.
func (k *keptSettled) held(nowMs int64) (n, bytes uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := nowMs / 1000
	for end, b := range k.buckets {
		if end <= now {
			delete(k.buckets, end)
			continue
		}
		n += uint64(b.n)
		bytes += uint64(b.bytes)
	}
	return n, bytes
}

// load counts the kept records of queue at open (keys only).
func (k *keptSettled) load(txn *badger.Txn, queue string, keep time.Duration) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: queuePrefix(pfxSettled, queue)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if exp := int64(item.ExpiresAt()); exp > 0 {
			k.add(exp, keep, 1, int64(len(item.Key()))+int64(item.ValueSize()))
		}
	}
}

// settledWindow describes how far back a queue's kept window reaches at now:
// from now-keep, and the settle time of its oldest kept record (0: none).
func (s *store) settledWindow(q *queue, now int64) (from, oldest int64, err error) {
	keep := q.cfg.KeepSettled
	from = now - keep.Milliseconds()
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: queuePrefix(pfxSettled, q.name)})
		defer it.Close()
		it.Rewind()
		if it.Valid() {
			t, err := settledKeyTime(q.name, it.Item().Key())
			if err != nil {
				return err
			}
			oldest = t
		}
		return nil
	})
	return from, oldest, storageErr(err)
}
