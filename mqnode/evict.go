package mqnode

import (
	"context"
	"fmt"
	"time"

	"github.com/mqmesh/mqmesh/internal/subject"
)

// Queue flood protection: a node holds at most Config.MaxQueues queues, and
// an auto-created queue that stayed empty (no task, lease or dead letter)
// and unused (no enqueue or pull) for Config.QueueIdleEvict is removed,
// metadata included, so it is not loaded again at the next start. Declared
// queues (Config.Queues) are never evicted.

// touch records a use of q (an enqueue or pull looked it up).
func (q *queue) touch(now int64) { q.lastUsed.Store(now) }

// createAllowed checks the queue cap before a new queue is created; called
// with s.qmu held.
func (s *store) createAllowedLocked(name string) error {
	if _, declared := s.cfg.Queues[name]; declared {
		return nil
	}
	if len(s.queues) >= s.cfg.MaxQueues {
		return fmt.Errorf("%w: the node holds %d queues (max_queues); queue %q not created", ErrUnavailable, len(s.queues), name)
	}
	return nil
}

// evictIdle removes the idle, empty, undeclared queues; it returns their
// names. Lookups that create or use a queue hold s.qmu (read) while they
// touch it, and eviction holds it (write) from the check to the metadata
// delete, so a queue in use is never removed and a name re-created after
// eviction gets fresh metadata.
func (s *store) evictIdle(ctx context.Context, now int64) ([]string, error) {
	if s.cfg.QueueIdleEvict <= 0 {
		return nil, nil
	}
	cutoff := now - s.cfg.QueueIdleEvict.Milliseconds()
	s.qmu.Lock()
	defer s.qmu.Unlock()
	var gone []*queue
	for name, q := range s.queues {
		if _, declared := s.cfg.Queues[name]; declared || q.lastUsed.Load() > cutoff {
			continue
		}
		q.mu.Lock()
		empty := q.stored == 0 && q.leased == 0 && q.dead == 0
		q.mu.Unlock()
		if kept, _ := q.kept.held(now); kept > 0 {
			empty = false // settled tasks kept for replay (settled.go)
		}
		if empty {
			gone = append(gone, q)
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	err := s.w.do(ctx, &writeOp{prepare: func(w *wtx) error {
		for _, q := range gone {
			w.del(metaKey(q.name))
			w.del(totalsKey(q.name))
		}
		return nil
	}})
	if err != nil {
		return nil, err
	}
	names := make([]string, len(gone))
	for i, q := range gone {
		delete(s.queues, q.name)
		q.stop()
		names[i] = q.name
	}
	return names, nil
}

// deleteQueue removes an empty, undeclared queue now (OpQueueDelete).
func (s *store) deleteQueue(ctx context.Context, name string) error {
	if err := subject.Validate("queue", name); err != nil {
		return err
	}
	if _, declared := s.cfg.Queues[name]; declared {
		return fmt.Errorf("%w: queue %q is declared in the node's config; remove it there", ErrBadRequest, name)
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	q := s.queues[name]
	if q == nil {
		return fmt.Errorf("%w: %q", ErrUnknownQueue, name)
	}
	q.mu.Lock()
	stored, leased, dead := q.stored, q.leased, q.dead
	q.mu.Unlock()
	if stored != 0 || leased != 0 || dead != 0 {
		return fmt.Errorf("%w: queue %q is not empty (%d tasks stored, %d leased, %d dead): drain it and purge its dead letters first", ErrBadRequest, name, stored, leased, dead)
	}
	if err := s.w.do(ctx, &writeOp{prepare: func(w *wtx) error {
		w.del(metaKey(name))
		w.del(totalsKey(name))
		return nil
	}}); err != nil {
		return err
	}
	delete(s.queues, name)
	q.stop()
	return nil
}

// runEvict sweeps idle queues every minute (or QueueIdleEvict, if shorter).
func (s *store) runEvict() {
	if s.cfg.QueueIdleEvict <= 0 {
		return
	}
	s.every(min(time.Minute, s.cfg.QueueIdleEvict), func() {
		names, err := s.evictIdle(context.Background(), s.nowMs())
		if err != nil {
			s.log.Warn("idle queue eviction failed", "err", err)
		} else if len(names) > 0 {
			s.log.Info("evicted idle empty queues", "count", len(names), "first", names[0])
		}
	})
}
