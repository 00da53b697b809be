package mqnode

import (
	"context"
	"fmt"
	"time"

	"github.com/mqmesh/mqmesh/mqnode/throttle"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// ack settles a batch of deliveries by receipt. Each item gets its own
// result; a stale receipt fails only its item and changes nothing. All the
// writes of the batch share one group commit.
func (s *store) ack(ctx context.Context, items []*wirepb.AckItem) ([]*wirepb.AckResult, error) {
	if len(items) == 0 {
		return nil, fmt.Errorf("%w: no ack items", ErrBadRequest)
	}
	if len(items) > s.cfg.MaxEnqueueBatch {
		return nil, fmt.Errorf("%w: %d ack items, limit %d", ErrBadRequest, len(items), s.cfg.MaxEnqueueBatch)
	}
	results := make([]*wirepb.AckResult, len(items))
	type pending struct {
		i  int
		op *writeOp
		l  *lease
	}
	var waits []pending
	now := s.nowMs()
	for i, it := range items {
		res := &wirepb.AckResult{}
		results[i] = res
		if it == nil {
			res.Error = toWireError(fmt.Errorf("%w: empty ack item", ErrBadRequest))
			continue
		}
		if it.Kind == wirepb.AckKind_EXTEND {
			if err := checkMs("extend_ms", it.ExtendMs, s.cfg.MaxLease); err != nil {
				res.Error = toWireError(err)
				continue
			}
			dl, ok := s.leases.extend(it.Receipt, it.ExtendMs, now)
			if !ok {
				res.Error = toWireError(staleErr(it.Receipt))
				continue
			}
			res.LeaseDeadlineUnixMs = dl
			continue
		}
		op, err := s.settleOp(ctx, it, res)
		if err != nil {
			res.Error = toWireError(err)
			continue
		}
		waits = append(waits, pending{i: i, op: op.op, l: op.l})
	}
	for _, p := range waits {
		if err := s.w.submit(p.op); err != nil {
			s.leases.restore(p.l)
			results[p.i].Error = toWireError(err)
			p.op = nil
		}
	}
	for _, p := range waits {
		if p.op == nil || results[p.i].Error != nil {
			continue
		}
		select {
		case <-p.op.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if p.op.err != nil {
			s.leases.restore(p.l)
			results[p.i].Error = toWireError(p.op.err)
		}
	}
	return results, nil
}

func staleErr(rc []byte) error {
	return fmt.Errorf("%w: receipt %x has no lease (expired, settled, or from an earlier run)", ErrStaleReceipt, rc)
}

type settle struct {
	op *writeOp
	l  *lease
}

// settleOp takes the lease of an ACK, NACK or DEAD item and builds its write.
// Everything that can be checked is checked before the lease is taken.
func (s *store) settleOp(ctx context.Context, it *wirepb.AckItem, res *wirepb.AckResult) (settle, error) {
	var subq *queue
	var fan []*fanQueue // subtasks to a topic (topic.go)
	switch it.Kind {
	case wirepb.AckKind_ACK:
		if len(it.Subtasks) > 0 {
			if it.SubtaskQueue != "" {
				if err := ValidateTarget("subtask_queue", it.SubtaskQueue); err != nil {
					return settle{}, err
				}
			}
			if err := s.validateItems(it.Subtasks, "subtasks"); err != nil {
				return settle{}, err
			}
			if err := s.disk.admit(); err != nil {
				return settle{}, fmt.Errorf("subtasks: %w", err)
			}
		}
	case wirepb.AckKind_NACK, wirepb.AckKind_DEAD:
		if err := checkMs("delay_ms", it.DelayMs, s.cfg.MaxDelay); err != nil {
			return settle{}, err
		}
	default:
		return settle{}, fmt.Errorf("%w: unknown ack kind %d", ErrBadRequest, it.Kind)
	}
	if len(it.Subtasks) > 0 && it.SubtaskQueue != "" {
		var err error
		if topic, ok := TopicTarget(it.SubtaskQueue); ok {
			fan, err = s.fanout(ctx, topic, it.Subtasks)
		} else {
			subq, err = s.queue(ctx, it.SubtaskQueue, true)
		}
		if err != nil {
			return settle{}, err
		}
	}
	l := s.leases.take(it.Receipt)
	if l == nil {
		return settle{}, staleErr(it.Receipt)
	}
	s.obs.settled(l, it.Kind, it.Error, s.nowMs())
	switch it.Kind {
	case wirepb.AckKind_NACK:
		s.settled(l.q, it.Calls, throttle.Failed)
		l.q.c.nacked.Add(1)
		return settle{op: s.retryOp(l, msDuration(it.DelayMs), it.Error, "nacked"), l: l}, nil
	case wirepb.AckKind_DEAD:
		s.settled(l.q, it.Calls, throttle.GaveUp)
		reason := "given up by handler"
		if it.Error != "" {
			reason += ": " + it.Error
		}
		t := cloneTask(l.task)
		t.Attempt++
		t.LastError = truncate(it.Error, maxReasonLen)
		return settle{op: s.deadLeaseOp(l, t, reason), l: l}, nil
	}
	if subq == nil {
		subq = l.q
	}
	q := l.q
	s.settled(q, it.Calls, throttle.Succeeded)
	var spawned []*wirepb.EnqueueResult
	return settle{l: l, op: &writeOp{
		prepare: func(w *wtx) error {
			w.del(l.key)
			w.effect(effect{q: q, stored: -1, leased: -1})
			if err := w.keepSettled(q, l.task, outcomeAcked); err != nil {
				return err
			}
			if len(it.Subtasks) == 0 {
				return nil
			}
			if fan != nil {
				return w.putFanoutSubtasks(fan, it.Subtasks, res)
			}
			ids, err := w.putTasks(subq, it.Subtasks, "")
			if err != nil {
				return err
			}
			spawned = ids
			res.SubtaskIds = res.SubtaskIds[:0]
			for _, r := range ids {
				res.SubtaskIds = append(res.SubtaskIds, r.Id)
			}
			return nil
		},
		after: func() {
			now := s.nowMs()
			q.c.acked.add(now, 1)
			if fan != nil {
				traceFanout(s.obs, fan, time.Time{}, l.task.Id, "")
			}
			if n := len(it.Subtasks); n > 0 && fan == nil {
				subq.c.enqueued.add(now, int64(n))
				s.obs.enqueued(subq.name, it.Subtasks, spawned, time.Time{}, l.task.Id, "")
			}
		},
	}}, nil
}

// releaseWorker returns every task leased by holder (see leaseHolder) to
// ready at once (the mesh reports the worker dead). It returns how many
// leases ended.
func (s *store) releaseWorker(holder, workerID string) int {
	return s.leases.expireWorker(holder, workerID)
}
