package mqnode

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

const dlqChunk = 500

// dlqList returns up to limit dead-letter records after the cursor.
func (s *store) dlqList(q *queue, after string, limit int) ([]*wirepb.DeadTask, string, error) {
	switch {
	case limit <= 0:
		limit = 100
	case limit > 1000:
		limit = 1000
	}
	prefix := queuePrefix(pfxDead, q.name)
	start := prefix
	if after != "" {
		seq, err := parseDeadID(after)
		if err != nil {
			return nil, "", err
		}
		start = deadKey(q.name, seq+1)
	}
	var out []*wirepb.DeadTask
	next := ""
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 32})
		defer it.Close()
		budget, used := s.replyBudget(), 0
		for it.Seek(start); it.Valid(); it.Next() {
			if len(out) == limit || (len(out) > 0 && used+int(it.Item().ValueSize())+deliveryOverhead > budget) {
				next = out[len(out)-1].DeadId
				return nil
			}
			raw, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var d wirepb.DeadTask
			if derr := decodeFrame(raw, &d); derr != nil {
				k := it.Item().Key()
				d = wirepb.DeadTask{Reason: "unreadable dead-letter record: " + derr.Error(), Raw: raw,
					DeadId: deadID(deadKeySeq(k))}
			}
			fitDead(&d, budget)
			used += proto.Size(&d) + deliveryOverhead
			out = append(out, &d)
		}
		return nil
	})
	return out, next, storageErr(err)
}

// deadKeySeq is the sequence at the end of a dead-letter key.
func deadKeySeq(k []byte) uint64 { return binary.BigEndian.Uint64(k[len(k)-8:]) }

// dlqChange requeues or purges dead-letter records: the named ones (all or
// nothing: an unknown id fails the request and changes nothing), or every
// record when ids is empty (in chunks). It returns how many changed.
func (s *store) dlqChange(ctx context.Context, q *queue, ids []string, requeue bool) (uint64, error) {
	if len(ids) > 0 {
		keys := make([][]byte, len(ids))
		for i, id := range ids {
			seq, err := parseDeadID(id)
			if err != nil {
				return 0, err
			}
			keys[i] = deadKey(q.name, seq)
		}
		return s.dlqChangeKeys(ctx, q, keys, requeue, true)
	}
	var total uint64
	for {
		keys, err := s.firstKeys(queuePrefix(pfxDead, q.name), dlqChunk)
		if err != nil || len(keys) == 0 {
			return total, err
		}
		n, err := s.dlqChangeKeys(ctx, q, keys, requeue, false)
		total += n
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, fmt.Errorf("%w: %d dead-letter records cannot be requeued (unreadable); purge them", ErrBadRequest, len(keys))
		}
	}
}

func (s *store) firstKeys(prefix []byte, n int) ([][]byte, error) {
	var keys [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(keys) < n; it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	return keys, storageErr(err)
}

func (s *store) dlqChangeKeys(ctx context.Context, q *queue, keys [][]byte, requeue, strict bool) (uint64, error) {
	var changed uint64
	op := &writeOp{prepare: func(w *wtx) error {
		changed = 0
		for _, k := range keys {
			raw, err := w.get(k)
			if err != nil {
				return storageErr(err)
			}
			if raw == nil {
				if strict {
					return fmt.Errorf("%w: dead-letter id %s in queue %q", ErrNotFound, deadID(deadKeySeq(k)), q.name)
				}
				continue
			}
			if requeue {
				t, ok := requeueable(raw)
				if !ok {
					if strict {
						return fmt.Errorf("%w: dead-letter id %s is unreadable and cannot be requeued; purge it", ErrBadRequest, deadID(deadKeySeq(k)))
					}
					continue
				}
				seq, err := w.nextSeq()
				if err != nil {
					return err
				}
				t.Attempt = 0
				frame, err := encodeTask(t)
				if err != nil {
					return err
				}
				readyAt := w.stamp()
				if t.ExpiresUnixMs != 0 && t.ExpiresUnixMs <= readyAt {
					t.ExpiresUnixMs = 0 // an operator's requeue restarts retention
					if frame, err = encodeTask(t); err != nil {
						return err
					}
				}
				w.set(taskKey(q.name, readyAt, seq), frame)
				w.effect(effect{q: q, stored: 1, readyAt: readyAt})
			}
			w.del(k)
			w.effect(effect{q: q, dead: -1})
			changed++
		}
		return nil
	}}
	err := s.w.do(ctx, op)
	return changed, err
}

// requeueable extracts the task of a dead-letter record, if it has one.
func requeueable(raw []byte) (*wirepb.Task, bool) {
	var d wirepb.DeadTask
	if err := decodeFrame(raw, &d); err != nil {
		return nil, false
	}
	if d.Task != nil && d.Task.Id != "" {
		if d.Task.LastError == "" {
			// It failed all the same (e.g. expired unconsumed): the handler
			// and the trace (a task that failed is traced) see why.
			d.Task.LastError = d.Reason
		}
		return d.Task, true
	}
	if len(d.Raw) > 0 {
		if t, err := decodeTask(d.Raw); err == nil {
			return t, true
		}
	}
	return nil, false
}
