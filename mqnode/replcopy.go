package mqnode

import (
	"time"

	"github.com/dgraph-io/badger/v4"
)

// copy is re-replication: at the start of every session the primary sends
// its buddy every current record of its replicated queues (tasks, dead
// letters, dedup keys), at most BuddyConfig.CopyRate records a second. The
// copy reads through the writer goroutine (a read-only op per chunk whose
// records ride the same stream as the live writes), so each record is
// read after every write committed before it and before every write
// committed after it: a task acked during the copy is either copied and
// then deleted, or not copied — never resurrected on the buddy. The session
// counts as replicated once the last copy batch is confirmed.
func (r *replicator) copy(session uint64) {
	defer r.wg.Done()
	var names []string
	var total int64
	for _, name := range r.st.queueNames() {
		r.mu.Lock()
		mode := r.modeLocked(name)
		r.mu.Unlock()
		if mode == "" {
			continue
		}
		names = append(names, name)
		if q, err := r.st.queue(r.ctx, name, false); err == nil {
			q.mu.Lock()
			total += q.stored + q.dead
			q.mu.Unlock()
		}
	}
	if !r.setCopy(session, 0, total) {
		return
	}
	chunk := max(1, min(512, r.cfg.CopyRate/20))
	start, sent := time.Now(), 0
	for _, name := range names {
		for _, pfx := range []byte{pfxTask, pfxDead, pfxDedup} {
			prefix := queuePrefix(pfx, name)
			var after []byte
			for {
				var n int
				var last []byte
				op := &writeOp{aside: true, prepare: func(w *wtx) error {
					n, last, w.ship = 0, nil, w.ship[:0]
					it := w.txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
					defer it.Close()
					it.Seek(append(append([]byte(nil), prefix...), after...))
					for ; it.Valid() && n < chunk; it.Next() {
						item := it.Item()
						k := item.KeyCopy(nil)
						if after != nil && string(k[len(prefix):]) == string(after) {
							continue
						}
						v, err := item.ValueCopy(nil)
						if err != nil {
							continue // unreadable here: the node dead-letters it when it reaches it
						}
						m := mutation{key: k, val: v}
						if exp := item.ExpiresAt(); exp > 0 {
							if m.ttl = time.Until(time.Unix(int64(exp), 0)); m.ttl <= 0 {
								continue
							}
						}
						w.ship = append(w.ship, m)
						last = k[len(prefix):]
						n++
					}
					return nil
				}}
				if err := r.st.w.do(r.ctx, op); err != nil {
					r.log.Warn("re-replication copy stopped", "err", err)
					return
				}
				sent += n
				if !r.setCopy(session, int64(sent), max(total, int64(sent))) {
					return
				}
				if n < chunk {
					break
				}
				after = last
				// Bounded rate: no faster than CopyRate records a second.
				if wait := time.Duration(float64(sent)/float64(r.cfg.CopyRate)*float64(time.Second)) - time.Since(start); wait > 0 {
					select {
					case <-r.stop:
						return
					case <-time.After(wait):
					}
				}
			}
		}
	}
	r.mu.Lock()
	if session == r.session && r.up {
		r.copyFin, r.copyEnd = true, r.appended
		r.poke(r.kick)
	}
	r.mu.Unlock()
}

// setCopy records the copy's progress; false when the session is gone.
func (r *replicator) setCopy(session uint64, done, total int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if session != r.session || !r.up {
		return false
	}
	r.copyDone, r.copyTotal = done, total
	return true
}
