package mqnode

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

const (
	maxHeaderBytes = 64 << 10
	maxDedupKeyLen = 256
	maxReasonLen   = 4096
)

// validateItems checks an enqueue batch before anything is written.
func (s *store) validateItems(items []*wirepb.EnqueueItem, field string) error {
	if len(items) > s.cfg.MaxEnqueueBatch {
		return fmt.Errorf("%w: %s has %d tasks, limit %d", ErrBadRequest, field, len(items), s.cfg.MaxEnqueueBatch)
	}
	now := s.nowMs()
	for i, it := range items {
		if it == nil {
			return fmt.Errorf("%w: %s[%d] is empty", ErrBadRequest, field, i)
		}
		if len(it.Payload) > s.cfg.MaxPayload {
			return fmt.Errorf("%w: %s[%d] payload is %d bytes, limit %d", ErrPayloadTooLarge, field, i, len(it.Payload), s.cfg.MaxPayload)
		}
		hb := 0
		for k, v := range it.Headers {
			if k == "" {
				return fmt.Errorf("%w: %s[%d] has a header with an empty name", ErrBadRequest, field, i)
			}
			hb += len(k) + len(v)
		}
		if hb > maxHeaderBytes {
			return fmt.Errorf("%w: %s[%d] headers are %d bytes, limit %d", ErrPayloadTooLarge, field, i, hb, maxHeaderBytes)
		}
		if len(it.DedupKey) > maxDedupKeyLen {
			return fmt.Errorf("%w: %s[%d] dedup key is %d bytes, limit %d", ErrBadRequest, field, i, len(it.DedupKey), maxDedupKeyLen)
		}
		if err := s.checkTiming(field, i, it.DelayMs, it.NotBeforeUnixMs, it.TtlMs, it.MaxAttempts, now); err != nil {
			return err
		}
		if err := s.checkReplyFit(field, i, it); err != nil {
			return err
		}
	}
	return nil
}

// putTasks records new tasks of items on q; results[i] gets each id.
// producer is the producer of the items without a HeaderProducer.
func (w *wtx) putTasks(q *queue, items []*wirepb.EnqueueItem, producer string) ([]*wirepb.EnqueueResult, error) {
	results := make([]*wirepb.EnqueueResult, len(items))
	var batchDedup map[string]string
	for i, it := range items {
		if it.DedupKey != "" {
			if id, ok := batchDedup[it.DedupKey]; ok {
				results[i] = &wirepb.EnqueueResult{Id: id, Duplicate: true}
				continue
			}
			v, err := w.get(dedupKey(q.name, it.DedupKey))
			if err != nil {
				return nil, storageErr(err)
			}
			if v != nil {
				results[i] = &wirepb.EnqueueResult{Id: string(v), Duplicate: true}
				continue
			}
		}
		seq, err := w.nextSeq()
		if err != nil {
			return nil, err
		}
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("%w: task id: %w", ErrInternal, err)
		}
		now := w.stamp()
		t := &wirepb.Task{
			Id: id.String(), Queue: q.name, Payload: it.Payload, Headers: it.Headers,
			CreatedUnixMs: now, MaxAttempts: it.MaxAttempts, DedupKey: it.DedupKey,
			Producer: cmp.Or(it.Headers[HeaderProducer], producer),
		}
		t.NotBeforeUnixMs = it.NotBeforeUnixMs
		if t.NotBeforeUnixMs == 0 && it.DelayMs > 0 {
			t.NotBeforeUnixMs = addMs(now, it.DelayMs)
		}
		switch {
		case it.TtlMs > 0:
			t.ExpiresUnixMs = addMs(max(now, t.NotBeforeUnixMs), it.TtlMs)
		case q.cfg.Retention > 0:
			t.ExpiresUnixMs = addMs(max(now, t.NotBeforeUnixMs), q.cfg.Retention.Milliseconds())
		}
		frame, err := encodeTask(t)
		if err != nil {
			return nil, err
		}
		readyAt := max(now, t.NotBeforeUnixMs)
		w.set(taskKey(q.name, readyAt, seq), frame)
		w.effect(effect{q: q, stored: 1, readyAt: readyAt})
		if it.DedupKey != "" {
			w.setTTL(dedupKey(q.name, it.DedupKey), []byte(t.Id), q.cfg.DedupWindow)
			if batchDedup == nil {
				batchDedup = map[string]string{}
			}
			batchDedup[it.DedupKey] = t.Id
		}
		results[i] = &wirepb.EnqueueResult{Id: t.Id}
	}
	return results, nil
}

// admitItems is what every enqueue (to a queue or a topic) checks before
// writing: a non-empty batch of valid items, and room on the disk.
func (s *store) admitItems(items []*wirepb.EnqueueItem) error {
	if len(items) == 0 {
		return fmt.Errorf("%w: no tasks to enqueue", ErrBadRequest)
	}
	if err := s.validateItems(items, "items"); err != nil {
		return err
	}
	return s.disk.admit()
}

// enqueue durably stores a batch of tasks and returns their ids.
// producer names who enqueued them (EnqueueRequest.producer; "" for the
// node's own enqueues): the producer of every item without its own
// HeaderProducer.
func (s *store) enqueue(ctx context.Context, queueName string, items []*wirepb.EnqueueItem, producer string) ([]*wirepb.EnqueueResult, error) {
	if topic, ok := TopicTarget(queueName); ok {
		return s.publish(ctx, topic, items, producer) // topic.go
	}
	if err := subject.Validate("queue", queueName); err != nil {
		return nil, err
	}
	if err := s.admitItems(items); err != nil {
		return nil, err
	}
	q, err := s.queue(ctx, queueName, true)
	if err != nil {
		return nil, err
	}
	var results []*wirepb.EnqueueResult
	start := time.Now()
	op := &writeOp{
		prepare: func(w *wtx) error {
			var err error
			results, err = w.putTasks(q, items, producer)
			return err
		},
		after: func() {
			n := 0
			for _, r := range results {
				if !r.Duplicate {
					n++
				}
			}
			q.c.enqueued.add(s.nowMs(), int64(n))
		},
	}
	if err := s.w.do(ctx, op); err != nil {
		return nil, err
	}
	s.obs.enqueued(queueName, items, results, start, "", producer)
	return results, nil
}

// backoff is the retry delay after the attempt-th failure, with ±20% jitter.
func (q *queue) backoff(attempt uint32) time.Duration {
	d := q.cfg.BackoffBase
	for i := uint32(1); i < attempt && d < q.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, q.cfg.BackoffMax)
	j := time.Duration(float64(d) * (rand.Float64()*0.4 - 0.2))
	return max(d+j, time.Millisecond)
}

func cloneTask(t *wirepb.Task) *wirepb.Task {
	d := deliveredTask(t)
	d.Attempt = t.Attempt
	return d
}

// retryOp ends lease l with a failure: the task is rewritten with one more
// attempt to become ready after delay (negative: now; zero: backoff), or is
// moved to the dead letter queue when its attempts are used up.
func (s *store) retryOp(l *lease, delay time.Duration, lastErr, deadReason string) *writeOp {
	q := l.q
	t := cloneTask(l.task)
	t.Attempt++
	if lastErr != "" {
		t.LastError = truncate(lastErr, maxReasonLen)
	}
	maxAttempts := t.MaxAttempts
	if maxAttempts == 0 {
		maxAttempts = q.cfg.MaxAttempts
	}
	if t.Attempt >= maxAttempts {
		reason := fmt.Sprintf("%s: attempts exhausted (%d of %d)", deadReason, t.Attempt, maxAttempts)
		if t.LastError != "" {
			reason += "; last error: " + t.LastError
		}
		return s.deadLeaseOp(l, t, reason)
	}
	switch {
	case delay < 0:
		delay = 0
	case delay == 0:
		delay = q.backoff(t.Attempt)
	}
	return &writeOp{prepare: func(w *wtx) error {
		seq, err := w.nextSeq()
		if err != nil {
			return err
		}
		readyAt := addMs(w.stamp(), delay.Milliseconds())
		frame, err := encodeTask(t)
		if err != nil {
			return err
		}
		w.del(l.key)
		w.set(taskKey(q.name, readyAt, seq), frame)
		w.effect(effect{q: q, leased: -1, readyAt: readyAt})
		return nil
	}, after: func() { s.obs.retried(q, t, delay) }}
}

// deadOp moves the task record at key (not leased) to the dead letter
// queue. t may be nil when only the raw frame is known (corrupt record).
func (s *store) deadOp(q *queue, key []byte, t *wirepb.Task, raw []byte, reason string) *writeOp {
	return s.moveToDead(q, key, t, raw, reason, 0)
}

func (s *store) deadLeaseOp(l *lease, t *wirepb.Task, reason string) *writeOp {
	return s.moveToDead(l.q, l.key, t, nil, reason, -1)
}

func (s *store) moveToDead(q *queue, key []byte, t *wirepb.Task, raw []byte, reason string, leased int64) *writeOp {
	return &writeOp{
		prepare: func(w *wtx) error {
			seq, err := w.nextSeq()
			if err != nil {
				return err
			}
			frame, err := encodeFrame(&wirepb.DeadTask{
				Task: t, Reason: truncate(reason, maxReasonLen), DeadUnixMs: w.stamp(), Raw: raw, DeadId: deadID(seq),
			})
			if err != nil {
				return err
			}
			w.del(key)
			w.set(deadKey(q.name, seq), frame)
			if err := w.keepSettled(q, t, outcomeDead); err != nil {
				return err
			}
			w.effect(effect{q: q, stored: -1, leased: leased, dead: 1})
			return nil
		},
		after: func() { q.c.deadTotal.Add(1); s.obs.dead(q, t, reason) },
	}
}

// expire ends a lease that ran out (or whose worker died): the task is ready
// again at once, with the delivery counted as an attempt. If the write fails
// the lease is retried in a second, so the task is never stranded.
func (s *store) expire(l *lease, why string) {
	s.obs.expiredLease(l, why)
	op := s.retryOp(l, -1, why, why)
	after := op.after
	op.after = func() {
		l.q.c.expired.Add(1)
		if after != nil {
			after()
		}
	}
	op.failed = func(err error) {
		s.log.Warn("lease expiry write failed; retrying in 1s", "queue", l.q.name, "task", l.task.Id, "err", err)
		l.deadline = s.nowMs() + 1000
		s.leases.restore(l)
	}
	_ = s.w.submit(op) // ErrClosed: the task is ready again on the next open
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
