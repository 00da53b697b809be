package mqnode

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// The buddy side: a node keeps its primaries' records apart from its own
// tasks (replkeys.go) and answers each request only once its writes are
// durable under its own Durability. Requests of one primary are served one
// at a time (per-primary lock); different primaries' batches share the
// buddy's group commits.

// serve subscribes to this node's replication subject.
func (r *replicator) serve() error {
	sub, err := r.n.nc.Subscribe(ReplSubject(r.self.IDC, r.self.Name, "*"), func(m *nats.Msg) {
		r.hmu.Lock()
		if r.hclosed {
			r.hmu.Unlock()
			return
		}
		r.hwg.Add(1)
		r.hmu.Unlock()
		go func() {
			defer r.hwg.Done()
			r.handle(m)
		}()
	})
	if err != nil {
		return fmt.Errorf("mqnode: replication subscribe: %w", err)
	}
	r.sub = sub
	return nil
}

// closeServe stops answering and waits for the requests in progress.
func (r *replicator) closeServe() {
	if r.sub != nil {
		_ = r.sub.Unsubscribe()
	}
	r.hmu.Lock()
	r.hclosed = true
	r.hmu.Unlock()
	r.hwg.Wait()
}

func (r *replicator) primaryLock(pid string) *sync.Mutex {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	l := r.hlocks[pid]
	if l == nil {
		l = &sync.Mutex{}
		r.hlocks[pid] = l
	}
	return l
}

func (r *replicator) handle(m *nats.Msg) {
	op := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	reply, err := r.handleOp(op, m.Data)
	if reply == nil {
		reply = &wirepb.ReplReply{}
	}
	reply.Error = toWireError(err)
	if err != nil && !errors.Is(err, ErrFenced) {
		r.log.Warn("replication request refused", "op", op, "err", err)
	}
	b, merr := proto.Marshal(reply)
	if merr == nil {
		_ = m.Respond(b)
	}
}

// handleOp decodes and serves one replication request.
func (r *replicator) handleOp(op string, data []byte) (*wirepb.ReplReply, error) {
	req, err := decodeReplRequest(data)
	if err != nil {
		return nil, err
	}
	pid := req.PrimaryIdc + "." + req.Primary
	if pid == r.self.ID() {
		return nil, fmt.Errorf("%w: a node cannot be its own buddy", ErrBadRequest)
	}
	l := r.primaryLock(pid)
	l.Lock()
	defer l.Unlock()
	held, err := r.loadHeld(pid)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	switch op {
	case opReplHello:
		return &wirepb.ReplReply{State: held.State, Epoch: held.Epoch, AppliedSeq: held.AppliedSeq}, nil
	case opReplBegin:
		if held.State == wirepb.ReplHeldState_HELD_TAKEN_OVER || req.Epoch <= held.Epoch {
			return &wirepb.ReplReply{State: held.State, Epoch: held.Epoch}, fmt.Errorf("%w: begin epoch %d, buddy has %d (%s)", ErrFenced, req.Epoch, held.Epoch, held.State)
		}
		if _, err := r.deletePrefix(ctx, primaryPrefix(pfxShadow, pid)); err != nil {
			return nil, err
		}
		held = &wirepb.ReplHeld{PrimaryIdc: req.PrimaryIdc, Primary: req.Primary, Epoch: req.Epoch,
			State: wirepb.ReplHeldState_HELD_STANDBY, SinceUnixMs: time.Now().UnixMilli()}
		if err := r.saveHeld(ctx, pid, held, nil); err != nil {
			return nil, err
		}
		r.setCount(pid, 0)
		r.log.Info("standby copy begins", "primary", pid, "epoch", req.Epoch)
		return &wirepb.ReplReply{State: held.State, Epoch: held.Epoch}, nil
	case opReplShip:
		return r.applyShip(ctx, pid, held, req)
	case opReplTakeover:
		// The primary lost its store (it starts with no replication
		// state while this buddy holds its copy): take over now rather
		// than let its next epoch drop the copy.
		if held.State == wirepb.ReplHeldState_HELD_STANDBY {
			if err := r.takeoverLocked(pid, 0); err != nil {
				return nil, err
			}
			if held, err = r.loadHeld(pid); err != nil {
				return nil, err
			}
		}
		return &wirepb.ReplReply{State: held.State, Epoch: held.Epoch}, nil
	case opReplReconcile:
		keys, more, err := r.tookOverPage(pid, req.After)
		return &wirepb.ReplReply{State: held.State, Epoch: held.Epoch, Keys: keys, More: more}, err
	case opReplRelease:
		if held.State != wirepb.ReplHeldState_HELD_TAKEN_OVER || req.Epoch != held.Epoch {
			return &wirepb.ReplReply{State: held.State, Epoch: held.Epoch}, fmt.Errorf("%w: release of epoch %d, buddy has %d (%s)", ErrFenced, req.Epoch, held.Epoch, held.State)
		}
		if _, err := r.deletePrefix(ctx, primaryPrefix(pfxTookOver, pid)); err != nil {
			return nil, err
		}
		held.State, held.SinceUnixMs = wirepb.ReplHeldState_HELD_NONE, time.Now().UnixMilli()
		if err := r.saveHeld(ctx, pid, held, nil); err != nil {
			return nil, err
		}
		r.log.Info("primary reconciled after takeover", "primary", pid, "epoch", held.Epoch)
		return &wirepb.ReplReply{State: held.State, Epoch: held.Epoch}, nil
	}
	return nil, fmt.Errorf("%w: replication op %q", ErrUnknownOp, op)
}

// decodeReplRequest decodes and checks a replication request: names are
// subject tokens, every record key is a task, dead-letter or dedup key of
// a queue with a valid name (nothing else of the buddy's store can be
// written through it).
func decodeReplRequest(data []byte) (*wirepb.ReplRequest, error) {
	var req wirepb.ReplRequest
	if err := proto.Unmarshal(data, &req); err != nil {
		return nil, fmt.Errorf("%w: replication request: %w", ErrBadRequest, err)
	}
	if err := subject.Validate("primary_idc", req.PrimaryIdc); err != nil {
		return nil, err
	}
	if err := subject.Validate("primary", req.Primary); err != nil {
		return nil, err
	}
	for i, rec := range req.Records {
		q, ok := replQueueOf(rec.Key)
		if !ok {
			return nil, fmt.Errorf("%w: record %d: key %x is not a replicated key", ErrBadRequest, i, rec.Key)
		}
		if err := subject.Validate("queue", q); err != nil {
			return nil, fmt.Errorf("%w: record %d: %w", ErrBadRequest, i, err)
		}
		if rec.Key[0] == pfxTask || rec.Key[0] == pfxDead {
			if want := 2 + len(q) + 8; rec.Key[0] == pfxDead && len(rec.Key) != want || rec.Key[0] == pfxTask && len(rec.Key) != want+8 {
				return nil, fmt.Errorf("%w: record %d: malformed key %x", ErrBadRequest, i, rec.Key)
			}
		}
		if rec.Del && len(rec.Value) > 0 {
			return nil, fmt.Errorf("%w: record %d: a delete with a value", ErrBadRequest, i)
		}
	}
	return &req, nil
}

// applyShip stores a batch under the primary's prefix, durably, in order.
func (r *replicator) applyShip(ctx context.Context, pid string, held *wirepb.ReplHeld, req *wirepb.ReplRequest) (*wirepb.ReplReply, error) {
	if held.State != wirepb.ReplHeldState_HELD_STANDBY || req.Epoch != held.Epoch {
		return &wirepb.ReplReply{State: held.State, Epoch: held.Epoch}, fmt.Errorf("%w: batch of epoch %d, buddy has %d (%s)", ErrFenced, req.Epoch, held.Epoch, held.State)
	}
	if req.Seq <= held.AppliedSeq {
		return &wirepb.ReplReply{State: held.State, Epoch: held.Epoch, AppliedSeq: held.AppliedSeq}, nil // a resend
	}
	if req.Seq != held.AppliedSeq+1 {
		return nil, fmt.Errorf("%w: batch %d after %d: a gap", ErrBadRequest, req.Seq, held.AppliedSeq)
	}
	next := proto.Clone(held).(*wirepb.ReplHeld)
	next.AppliedSeq = req.Seq
	next.CopyDone = held.CopyDone || req.CopyDone
	var delta int64
	now := time.Now()
	err := r.saveHeld(ctx, pid, next, func(w *wtx) {
		delta = 0
		for _, rec := range req.Records {
			k := shadowKey(pid, rec.Key)
			switch {
			case rec.Del:
				w.del(k)
				delta--
			case rec.ExpiresUnixMs > 0:
				ttl := time.UnixMilli(rec.ExpiresUnixMs).Sub(now)
				if ttl <= 0 {
					w.del(k)
					continue
				}
				w.setTTL(k, rec.Value, ttl)
			default:
				w.set(k, rec.Value)
				if rec.Key[0] != pfxDedup {
					delta++
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	r.addCount(pid, delta)
	return &wirepb.ReplReply{State: next.State, Epoch: next.Epoch, AppliedSeq: next.AppliedSeq}, nil
}

// loadHeld reads the stored state of a primary (zero state: none).
func (r *replicator) loadHeld(pid string) (*wirepb.ReplHeld, error) {
	held := &wirepb.ReplHeld{}
	err := r.st.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(heldStateKey(pid))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { return decodeFrame(v, held) })
	})
	if err != nil {
		return nil, fmt.Errorf("%w: replication state of %s: %w", ErrStorage, pid, err)
	}
	return held, nil
}

// saveHeld writes a primary's state, with more writes in the same
// transaction, and waits until it is durable.
func (r *replicator) saveHeld(ctx context.Context, pid string, held *wirepb.ReplHeld, more func(w *wtx)) error {
	frame, err := encodeFrame(held)
	if err != nil {
		return err
	}
	return r.st.w.do(ctx, &writeOp{aside: true, prepare: func(w *wtx) error {
		if more != nil {
			more(w)
		}
		w.set(heldStateKey(pid), frame)
		return nil
	}})
}

// deletePrefix deletes every key under prefix, in transactions of at most
// 10000 keys; it returns how many.
func (r *replicator) deletePrefix(ctx context.Context, prefix []byte) (int, error) {
	total := 0
	for {
		n := 0
		err := r.st.w.do(ctx, &writeOp{aside: true, prepare: func(w *wtx) error {
			n = 0
			it := w.txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			for it.Rewind(); it.Valid() && n < 10000; it.Next() {
				w.del(it.Item().KeyCopy(nil))
				n++
			}
			return nil
		}})
		if err != nil {
			return total, err
		}
		total += n
		if n == 0 {
			return total, nil
		}
	}
}

// tookOverPage lists the primary's keys this buddy took over, after a key.
func (r *replicator) tookOverPage(pid string, after []byte) (keys [][]byte, more bool, err error) {
	prefix := primaryPrefix(pfxTookOver, pid)
	err = r.st.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		size := 0
		for it.Seek(append(prefix, after...)); it.Valid(); it.Next() {
			k := it.Item().Key()[len(prefix):]
			if len(after) > 0 && string(k) == string(after) {
				continue
			}
			if len(keys) >= 8192 || size > 256<<10 {
				more = true
				return nil
			}
			keys = append(keys, append([]byte(nil), k...))
			size += len(k) + 4
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	return keys, more, nil
}

func (r *replicator) setCount(pid string, n int64) {
	r.hmu.Lock()
	r.hcount[pid] = n
	r.hmu.Unlock()
}

func (r *replicator) addCount(pid string, d int64) {
	r.hmu.Lock()
	if c, ok := r.hcount[pid]; ok {
		r.hcount[pid] = max(c+d, 0)
	}
	r.hmu.Unlock()
}

// heldStatus lists the primaries this node holds a copy of.
func (r *replicator) heldStatus() []*wirepb.ReplHeldStatus {
	if r.st == nil {
		return nil
	}
	var out []*wirepb.ReplHeldStatus
	_ = r.st.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxHeldState}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var h wirepb.ReplHeld
			if it.Item().Value(func(v []byte) error { return decodeFrame(v, &h) }) != nil {
				continue
			}
			pid := h.PrimaryIdc + "." + h.Primary
			r.hmu.Lock()
			n, ok := r.hcount[pid]
			r.hmu.Unlock()
			if !ok {
				n = countKeys(txn, primaryPrefix(pfxShadow, pid))
				r.setCount(pid, n)
			}
			state := map[wirepb.ReplHeldState]string{wirepb.ReplHeldState_HELD_NONE: "none",
				wirepb.ReplHeldState_HELD_STANDBY: "standby", wirepb.ReplHeldState_HELD_TAKEN_OVER: "taken-over"}[h.State]
			out = append(out, &wirepb.ReplHeldStatus{Primary: pid, State: state, Epoch: h.Epoch, Records: n,
				CopyDone: h.CopyDone, SinceUnixMs: h.SinceUnixMs, TakenOver: h.TakenOver})
		}
		return nil
	})
	return out
}
