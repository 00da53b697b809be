package mqnode

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Replication operations, the last token of mqrepl.<idc>.<buddy>.<op>.
const (
	opReplHello     = "hello"
	opReplBegin     = "begin"
	opReplShip      = "ship"
	opReplReconcile = "recon"
	opReplRelease   = "release"
	opReplTakeover  = "takeover"
)

// ReplSubject is the subject of replication operation op on node name in
// idc. Only role node may publish or subscribe to mqrepl.> (see
// internal/secrets).
func ReplSubject(idc, name, op string) string { return "mqrepl." + idc + "." + name + "." + op }

// start runs the replicator on a started store and connection.
func (r *replicator) start(st *store) error {
	self, err := loadReplSelf(st)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.st = st
	r.epoch = self.GetEpoch()
	if self.GetBuddy() != "" {
		r.last = Peer{IDC: self.GetBuddyIdc(), Name: self.GetBuddy()}
		r.gateLocked() // serve nothing until the last buddy is asked
		r.state = ReplReconciling
	}
	r.started = true
	r.mu.Unlock()
	if err := r.serve(); err != nil { // replserve.go
		return err
	}
	st.repl.Store(r)
	r.wg.Add(2)
	go r.run()
	go r.watchPrimaries() // repltakeover.go
	return nil
}

// close stops the replicator: held ops fail with ErrClosed.
func (r *replicator) close() {
	r.mu.Lock()
	if !r.started {
		r.mu.Unlock()
		return
	}
	r.started = false
	r.mu.Unlock()
	r.closeServe()
	close(r.stop)
	r.cancel()
	r.wg.Wait()
	if r.st != nil {
		r.st.repl.Store(nil)
	}
	r.mu.Lock()
	r.up = false
	for _, h := range r.held {
		h.op.err = ErrClosed
		close(h.op.done)
	}
	r.held = nil
	r.ungateLocked()
	r.mu.Unlock()
}

func loadReplSelf(st *store) (*wirepb.ReplSelf, error) {
	var self wirepb.ReplSelf
	err := st.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(replSelfKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { return decodeFrame(v, &self) })
	})
	if err != nil {
		return nil, fmt.Errorf("%w: replication state: %w", ErrStorage, err)
	}
	return &self, nil
}

// run is the primary side: reconcile when needed, open a session with the
// buddy, ship, and keep held ops' deadlines.
func (r *replicator) run() {
	defer r.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	retryAt := time.Time{}
	for {
		now := time.Now()
		r.mu.Lock()
		r.releaseLocked(now)
		need, up := r.reconcile, r.up
		r.mu.Unlock()
		switch {
		case need && now.After(retryAt):
			if err := r.reconcileLast(); err != nil {
				r.log.Warn("reconcile with the last buddy failed; retrying", "buddy", r.last.ID(), "err", err)
				retryAt = now.Add(time.Second)
			}
		case !need && r.enabled && !up && now.After(retryAt):
			if err := r.open(); err != nil {
				r.log.Debug("no replication session", "err", err)
				retryAt = now.Add(500 * time.Millisecond)
			}
		case up:
			r.shipPending()
			r.checkBuddyAlive()
		}
		select {
		case <-r.stop:
			return
		case <-r.kick:
		case <-r.peersCh:
			retryAt = time.Time{}
		case <-tick.C:
		}
	}
}

// request sends one replication request to node to and decodes the reply;
// a FENCED reply is ErrFenced.
func (r *replicator) request(ctx context.Context, to Peer, op string, req *wirepb.ReplRequest) (*wirepb.ReplReply, error) {
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInternal, err)
	}
	m, err := r.n.nc.RequestWithContext(ctx, ReplSubject(to.IDC, to.Name, op), b)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("%w: buddy %s not reachable: %w", ErrUnavailable, to.ID(), err)
		}
		return nil, fmt.Errorf("%w: buddy %s: %w", ErrUnavailable, to.ID(), err)
	}
	var reply wirepb.ReplReply
	if err := proto.Unmarshal(m.Data, &reply); err != nil {
		return nil, fmt.Errorf("%w: buddy %s reply: %w", ErrBadRequest, to.ID(), err)
	}
	return &reply, fromWireError(reply.Error)
}

// requestUntil retries a request (ship batches are idempotent by seq)
// until it succeeds, is refused, or the deadline passes.
func (r *replicator) requestUntil(to Peer, op string, req *wirepb.ReplRequest, deadline time.Time) (*wirepb.ReplReply, error) {
	for {
		ctx, cancel := context.WithDeadline(r.ctx, deadline)
		try, cancel2 := context.WithTimeout(ctx, max(time.Until(deadline)/3, 50*time.Millisecond))
		reply, err := r.request(try, to, op, req)
		cancel2()
		cancel()
		if err == nil || !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) || r.ctx.Err() != nil {
			return reply, err
		}
		select {
		case <-r.stop:
			return nil, ErrClosed
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func isFenced(err error, _ *wirepb.ReplReply) bool { return errors.Is(err, ErrFenced) }

// open chooses the buddy and opens a session: hello, a new epoch stored
// locally, begin; then the copy of the current tasks starts.
func (r *replicator) open() error {
	r.mu.Lock()
	b, ok := r.chooseLocked()
	if !ok {
		if r.state != ReplNoBuddy {
			r.log.Warn("no buddy: no other alive node in the buddy IDC", "idc", r.cfg.IDC)
		}
		r.state = ReplNoBuddy
		r.alarm = "no buddy: no other alive node in idc " + r.cfg.IDC
		r.mu.Unlock()
		return errors.New("no buddy")
	}
	r.buddy = b
	if r.state != ReplDown {
		r.state = ReplConnecting
	}
	epoch := r.epoch
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.SyncTimeout)
	defer cancel()
	hello, err := r.request(ctx, b, opReplHello, &wirepb.ReplRequest{PrimaryIdc: r.self.IDC, Primary: r.self.Name, Epoch: epoch})
	if err != nil {
		return r.openFailed(err)
	}
	if hello.State == wirepb.ReplHeldState_HELD_STANDBY && epoch == 0 && hello.Epoch > 0 {
		// This node has no replication state but its buddy holds a copy
		// of it: the node lost its store. The buddy takes the copy over
		// (its tasks are not dropped by a new epoch); then reconcile.
		r.log.Warn("this node lost its store while its buddy holds its copy: asking the buddy to take the copy over", "buddy", b.ID(), "epoch", hello.Epoch)
		if hello, err = r.request(ctx, b, opReplTakeover, &wirepb.ReplRequest{PrimaryIdc: r.self.IDC, Primary: r.self.Name}); err != nil {
			return r.openFailed(err)
		}
	}
	if hello.State == wirepb.ReplHeldState_HELD_TAKEN_OVER {
		r.mu.Lock()
		r.last = b
		r.state = ReplFenced
		r.gateLocked()
		r.mu.Unlock()
		return fmt.Errorf("buddy %s took this node over (epoch %d): reconciling", b.ID(), hello.Epoch)
	}
	epoch = max(epoch, hello.Epoch) + 1
	if err := r.saveSelf(epoch, b); err != nil {
		return r.openFailed(err)
	}
	if _, err := r.request(ctx, b, opReplBegin, &wirepb.ReplRequest{PrimaryIdc: r.self.IDC, Primary: r.self.Name, Epoch: epoch}); err != nil {
		return r.openFailed(err)
	}
	r.mu.Lock()
	r.epoch = epoch
	r.last = b
	r.up = true
	r.session++
	r.pend, r.appended, r.acked, r.seq = nil, 0, 0, 0
	r.copyFin, r.copyFlagged, r.copyDone, r.copyTotal = false, false, 0, 0
	r.state = ReplCopying
	session := r.session
	r.mu.Unlock()
	r.log.Info("replication session open; copying current tasks", "buddy", b.ID(), "epoch", epoch)
	r.wg.Add(1)
	go r.copy(session) // replcopy.go
	return nil
}

func (r *replicator) openFailed(err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state = ReplDown
	r.alarm = fmt.Sprintf("buddy %s: %v", r.buddy.ID(), err)
	r.releaseLocked(time.Now())
	return err
}

// saveSelf stores this node's epoch and buddy before the buddy hears of
// the epoch, so a restart reconciles with the right buddy.
func (r *replicator) saveSelf(epoch uint64, b Peer) error {
	frame, err := encodeFrame(&wirepb.ReplSelf{Epoch: epoch, BuddyIdc: b.IDC, Buddy: b.Name})
	if err != nil {
		return err
	}
	return r.st.w.do(r.ctx, &writeOp{aside: true, prepare: func(w *wtx) error {
		w.set(replSelfKey, frame)
		return nil
	}})
}

// checkBuddyAlive ends the session when gossip reports the buddy down:
// the next session picks a new buddy and copies everything to it.
func (r *replicator) checkBuddyAlive() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.up || !r.peersSeen {
		return
	}
	if p, ok := r.peers[r.buddy.ID()]; !ok || !p.Alive {
		r.sessionDownLocked(ReplDown, fmt.Errorf("gossip reports buddy %s down", r.buddy.ID()))
	}
}

// status renders the replication state.
func (r *replicator) status() *wirepb.ReplStatus {
	r.mu.Lock()
	st := &wirepb.ReplStatus{
		Enabled: r.enabled, Mode: string(r.n.cfg.Replication), State: r.state, Epoch: r.epoch,
		LagRecords: int64(r.appended - r.acked), ShippedRecords: r.shipped, AckedRecords: r.ackedTotal,
		Batches: r.batches, CopyDone: r.copyDone, CopyTotal: r.copyTotal, UnreplicatedAcks: r.unreplicated,
		FailedEnqueues: r.failed, Alarm: r.alarm, LastAckAgeMs: -1, Takeovers: r.takeovers,
		BatchRttMs: float64(r.rtt.Microseconds()) / 1000, PartitionPolicy: string(r.cfg.PartitionPolicy),
	}
	if r.buddy.Name != "" {
		st.Buddy = r.buddy.ID()
	}
	if !r.lastAck.IsZero() {
		st.LastAckAgeMs = time.Since(r.lastAck).Milliseconds()
	}
	if !r.up {
		st.LagRecords = 0
	}
	r.mu.Unlock()
	st.Held = r.heldStatus() // replserve.go
	return st
}

// queueReplication says where a queue's writes are copied: the buddy,
// the state and the mode ("" when the queue is not replicated).
func (r *replicator) queueReplication(queue string) (buddy, state, mode string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.modeLocked(queue)
	if m == "" {
		return "", "", ""
	}
	if r.buddy.Name != "" {
		buddy = r.buddy.ID()
	}
	return buddy, r.state, string(m)
}
