package mqnode

import (
	"context"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// watchPrimaries is the buddy side of takeover: once a second it looks at
// the primaries it holds a standby copy of and takes over any that gossip
// has reported down for BuddyConfig.TakeoverAfter.
func (r *replicator) watchPrimaries() {
	defer r.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		for _, h := range r.heldStatus() {
			if h.State != "standby" {
				continue
			}
			r.mu.Lock()
			down := r.downForLocked(h.Primary, time.Now())
			r.mu.Unlock()
			if down >= r.cfg.TakeoverAfter {
				if err := r.takeover(h.Primary, down); err != nil {
					r.log.Error("takeover failed; retrying", "primary", h.Primary, "err", err)
				}
			}
		}
	}
}

// takeover promotes the standby copy of primary pid: first the new epoch
// (fencing the primary: its batches are refused from now on), then the
// records become tasks of this node's queues of the same names, in chunks,
// each chunk atomic (import, drop the standby record, remember the key
// taken for the primary's reconcile).
func (r *replicator) takeover(pid string, down time.Duration) error {
	l := r.primaryLock(pid)
	l.Lock()
	defer l.Unlock()
	return r.takeoverLocked(pid, down)
}

// takeoverLocked is takeover with the primary's lock held.
func (r *replicator) takeoverLocked(pid string, down time.Duration) error {
	held, err := r.loadHeld(pid)
	if err != nil || held.State != wirepb.ReplHeldState_HELD_STANDBY {
		return err
	}
	ctx := r.ctx
	held.Epoch++
	held.State, held.SinceUnixMs = wirepb.ReplHeldState_HELD_TAKEN_OVER, time.Now().UnixMilli()
	if err := r.saveHeld(ctx, pid, held, nil); err != nil {
		return err
	}
	r.log.Warn("taking over a failed primary's tasks", "primary", pid, "down_for", down.Round(time.Millisecond), "epoch", held.Epoch, "copy_complete", held.CopyDone)
	prefix := primaryPrefix(pfxShadow, pid)
	queues := map[string]*queue{}
	var imported uint64
	for {
		// The queues of the next chunk must exist before the write.
		names, err := r.shadowQueues(prefix, 1000)
		if err != nil {
			return err
		}
		for _, name := range names {
			if queues[name] != nil {
				continue
			}
			q, err := r.st.queue(ctx, name, true)
			if err != nil {
				return err
			}
			queues[name] = q
		}
		n := 0
		op := &writeOp{noWait: true, prepare: func(w *wtx) error {
			n = 0
			it := w.txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
			defer it.Close()
			stamp := w.stamp()
			for it.Rewind(); it.Valid() && n < 1000; it.Next() {
				item := it.Item()
				sk := item.KeyCopy(nil)
				orig := sk[len(prefix):]
				name, _ := replQueueOf(orig)
				q := queues[name]
				if q == nil {
					break // a queue not made yet: the next round makes it
				}
				v, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				var nk []byte
				switch orig[0] {
				case pfxTask:
					readyAt, _, err := parseTaskKey(name, orig)
					if err != nil {
						return err
					}
					seq, err := w.nextSeq()
					if err != nil {
						return err
					}
					// Ready tasks take the import's stamp, so no cursor has
					// passed them (store.horizon); their order is kept by seq.
					readyAt = max(readyAt, stamp)
					nk = taskKey(name, readyAt, seq)
					w.set(nk, v)
					w.effect(effect{q: q, stored: 1, readyAt: readyAt})
				case pfxDead:
					seq, err := w.nextSeq()
					if err != nil {
						return err
					}
					nk = deadKey(name, seq)
					w.set(nk, v)
					w.effect(effect{q: q, dead: 1})
				case pfxDedup:
					nk = orig
					if exp := item.ExpiresAt(); exp > 0 {
						if ttl := time.Until(time.Unix(int64(exp), 0)); ttl > 0 {
							w.setTTL(nk, v, ttl)
						}
					} else {
						w.set(nk, v)
					}
				}
				w.del(sk)
				w.set(tookOverKey(pid, orig), nk)
				n++
			}
			return nil
		}}
		if err := r.st.w.do(ctx, op); err != nil {
			return err
		}
		imported += uint64(n)
		if n == 0 {
			break
		}
	}
	held.TakenOver = imported
	if err := r.saveHeld(context.WithoutCancel(ctx), pid, held, nil); err != nil {
		return err
	}
	r.setCount(pid, 0)
	r.mu.Lock()
	r.takeovers++
	r.mu.Unlock()
	r.log.Warn("took over a failed primary's tasks: they are this node's tasks now", "primary", pid, "records", imported, "epoch", held.Epoch)
	return nil
}

// shadowQueues names the queues of the next max standby records.
func (r *replicator) shadowQueues(prefix []byte, max int) ([]string, error) {
	seen := map[string]bool{}
	var names []string
	err := r.st.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		i := 0
		for it.Rewind(); it.Valid() && i < max; it.Next() {
			i++
			if name, ok := replQueueOf(it.Item().Key()[len(prefix):]); ok && !seen[name] {
				seen[name] = true
				names = append(names, name)
			}
		}
		return nil
	})
	return names, err
}
