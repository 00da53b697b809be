package mqnode

import (
	"container/heap"
	"context"
	"fmt"
	"time"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// reconcileLast runs while pulls are held (after a restart, or fenced):
// it asks the last buddy what it holds of this node. If the buddy took
// over, the keys it took are deleted here (tasks completed there are gone
// with them; pending ones run there, they are not handed back) and the
// buddy forgets them; then pulls are served again and a new session
// starts. A last buddy that does not answer within ReconcileWait is given
// up on with an alarm.
func (r *replicator) reconcileLast() error {
	r.mu.Lock()
	last, gatedAt := r.last, r.gatedAt
	r.state = ReplReconciling
	r.mu.Unlock()
	if last.Name == "" {
		r.finishReconcile("", 0)
		return nil
	}
	ctx, cancel := context.WithTimeout(r.ctx, min(r.cfg.SyncTimeout, 2*time.Second))
	hello, err := r.request(ctx, last, opReplHello, &wirepb.ReplRequest{PrimaryIdc: r.self.IDC, Primary: r.self.Name})
	cancel()
	if err != nil {
		if time.Since(gatedAt) < r.cfg.ReconcileWait {
			return err
		}
		r.finishReconcile(fmt.Sprintf("not reconciled with last buddy %s (%v): tasks it took over, if any, may run twice", last.ID(), err), 0)
		return nil
	}
	if hello.State != wirepb.ReplHeldState_HELD_TAKEN_OVER {
		r.finishReconcile("", hello.Epoch)
		return nil
	}
	var after []byte
	dropped := 0
	for {
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.SyncTimeout)
		page, err := r.request(ctx, last, opReplReconcile, &wirepb.ReplRequest{PrimaryIdc: r.self.IDC, Primary: r.self.Name, Epoch: hello.Epoch, After: after})
		cancel()
		if err != nil {
			return fmt.Errorf("reconcile page: %w", err)
		}
		n, err := r.dropLocal(page.Keys)
		if err != nil {
			return err
		}
		dropped += n
		if !page.More || len(page.Keys) == 0 {
			break
		}
		after = page.Keys[len(page.Keys)-1]
	}
	ctx, cancel = context.WithTimeout(r.ctx, r.cfg.SyncTimeout)
	_, err = r.request(ctx, last, opReplRelease, &wirepb.ReplRequest{PrimaryIdc: r.self.IDC, Primary: r.self.Name, Epoch: hello.Epoch})
	cancel()
	if err != nil {
		return fmt.Errorf("reconcile release: %w", err)
	}
	r.log.Warn("reconciled after a takeover: the buddy's tasks stay with it", "buddy", last.ID(), "epoch", hello.Epoch, "deleted_here", dropped)
	r.finishReconcile("", hello.Epoch)
	return nil
}

func (r *replicator) finishReconcile(alarm string, epoch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.epoch = max(r.epoch, epoch)
	r.alarm = alarm
	if alarm != "" {
		r.log.Error(alarm)
	}
	if r.enabled {
		r.state = ReplConnecting
	} else {
		r.state = ReplOff
	}
	r.ungateLocked()
	r.poke(r.peersCh)
}

// dropLocal deletes keys of this node's replicated keyspaces that the
// buddy took over, with their in-memory state: window entries and leases.
func (r *replicator) dropLocal(keys [][]byte) (int, error) {
	queues := map[string]*queue{}
	for _, k := range keys {
		if name, ok := replQueueOf(k); ok && queues[name] == nil {
			if q, err := r.st.queue(r.ctx, name, false); err == nil {
				queues[name] = q
			}
		}
	}
	gone := map[string]int64{} // deleted task key -> readyAt
	n := 0
	op := &writeOp{noWait: true, prepare: func(w *wtx) error {
		n = 0
		clear(gone)
		for _, k := range keys {
			name, _ := replQueueOf(k)
			q := queues[name]
			if q == nil {
				continue
			}
			v, err := w.get(k)
			if err != nil {
				return err
			}
			if v == nil {
				continue
			}
			w.del(k)
			n++
			switch k[0] {
			case pfxTask:
				readyAt, _, _ := parseTaskKey(name, k)
				gone[string(k)] = readyAt
				w.effect(effect{q: q, stored: -1})
			case pfxDead:
				w.effect(effect{q: q, dead: -1})
			}
		}
		return nil
	}}
	op.after = func() { r.forget(queues, gone) }
	if err := r.st.w.do(r.ctx, op); err != nil {
		return 0, err
	}
	return n, nil
}

// forget removes deleted task keys from the ready windows, the delayed
// counts and the lease table.
func (r *replicator) forget(queues map[string]*queue, gone map[string]int64) {
	if len(gone) == 0 {
		return
	}
	lt := r.st.leases
	lt.mu.Lock()
	var dropped []*lease
	for rc, l := range lt.byReceipt {
		if _, ok := gone[string(l.key)]; ok {
			delete(lt.byReceipt, rc)
			dropped = append(dropped, l)
		}
	}
	for _, l := range dropped {
		heap.Remove(&lt.h, l.idx)
	}
	lt.mu.Unlock()
	leasedGone := map[*queue]int64{}
	for _, l := range dropped {
		leasedGone[l.q]++
	}
	now := r.st.nowMs()
	for _, q := range queues {
		q.mu.Lock()
		q.leased -= leasedGone[q]
		keep := q.buf[:0]
		for _, e := range q.buf {
			if _, ok := gone[string(e.key)]; ok {
				q.addBuf(-e.size)
				continue
			}
			keep = append(keep, e)
		}
		q.buf = keep
		for k, readyAt := range gone {
			if name, _ := replQueueOf([]byte(k)); name == q.name && readyAt > now {
				q.undelayLocked(readyAt, now)
			}
		}
		q.mu.Unlock()
	}
}
