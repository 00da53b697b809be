package mqnode

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// replicator is a node's replication: the primary side (this file, the
// session in replsession.go, the copy in replcopy.go) and the buddy side
// (replserve.go, repltakeover.go). Lock order: store locks → replicator.mu
// (committed runs on the writer goroutine after the group's effects);
// replicator.mu is never held across a network call or a write.
type replicator struct {
	n       *Node
	cfg     BuddyConfig
	log     *slog.Logger
	self    Peer
	enabled bool // some queue of the node is replicated

	mu        sync.Mutex
	st        *store
	peers     map[string]Peer // by ID
	peersSeen bool
	downSince map[string]time.Time
	qmode     map[string]ReplicationMode // per queue; "" = not replicated

	buddy Peer // zero Name: none
	state string
	epoch uint64
	alarm string
	// last is the buddy of the stored ReplSelf: the one to reconcile with.
	last      Peer
	reconcile bool // pulls held until the last buddy is asked
	gatedAt   time.Time
	serving   chan struct{} // closed while pulls are served

	// The session's stream: records committed and not yet confirmed.
	up          bool
	session     uint64
	pend        []*wirepb.ReplRecord
	appended    uint64 // records appended in the session
	acked       uint64 // records the buddy confirmed
	seq         uint64 // last batch confirmed
	copyEnd     uint64 // copy finished at this record (with copyFinished)
	copyFin     bool
	copyFlagged bool // the buddy was told the copy is complete
	copyDone    int64
	copyTotal   int64
	held        []*heldOp

	shipped, ackedTotal, batches, unreplicated, failed, takeovers uint64
	lastAck                                                       time.Time
	rtt                                                           time.Duration

	kick    chan struct{}
	peersCh chan struct{}
	stop    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool

	// Buddy side (replserve.go).
	hmu     sync.Mutex
	hclosed bool
	hwg     sync.WaitGroup
	sub     *nats.Subscription
	hlocks  map[string]*sync.Mutex
	hcount  map[string]int64 // standby records held per primary (approximate)
}

// heldOp is a committed write whose caller waits for the buddy.
type heldOp struct {
	op       *writeOp
	upTo     uint64 // confirmed once acked >= upTo in the session
	session  uint64
	needCopy bool // its records were dropped with a session: wait for a confirmed copy
	deadline time.Time
}

func newReplicator(n *Node) *replicator {
	cfg := n.cfg
	r := &replicator{
		n: n, cfg: cfg.Buddy, log: n.log.With("component", "repl"),
		self:    Peer{IDC: cfg.IDC, Name: cfg.Name, Host: cfg.Host, Alive: true},
		enabled: cfg.anyReplicated(),
		peers:   map[string]Peer{}, downSince: map[string]time.Time{}, qmode: map[string]ReplicationMode{},
		serving: make(chan struct{}),
		kick:    make(chan struct{}, 1), peersCh: make(chan struct{}, 1), stop: make(chan struct{}),
		hlocks: map[string]*sync.Mutex{}, hcount: map[string]int64{},
	}
	close(r.serving)
	r.state = ReplOff
	if r.enabled {
		r.state = ReplNoBuddy
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r
}

func (r *replicator) poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// mode returns the replication mode of a queue ("" = not replicated).
func (r *replicator) modeLocked(queue string) ReplicationMode {
	m, ok := r.qmode[queue]
	if !ok {
		qc := r.n.cfg.queueConfig(queue)
		if qc.replicated() {
			m = qc.Replication
		}
		if len(r.qmode) < 100000 {
			r.qmode[queue] = m
		}
	}
	return m
}

// committed is the writer's call-out after a group committed (before the
// callers are woken): it queues the records of replicated queues in commit
// order and holds the ops whose callers must wait for the buddy (sync; async
// past MaxLag with lag_policy block). It never blocks.
func (r *replicator) committed(group []*writeOp) {
	if !r.enabled {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	shippedAny := false
	for _, op := range group {
		if op.err != nil || (len(op.muts) == 0 && len(op.ship) == 0) {
			continue
		}
		var syncPut, asyncPut bool
		n := 0
		for _, list := range [2][]mutation{op.muts, op.ship} {
			for _, m := range list {
				q, ok := replQueueOf(m.key)
				if !ok {
					continue
				}
				mode := r.modeLocked(q)
				if mode == "" {
					continue
				}
				if !m.del && m.key[0] != pfxDedup {
					syncPut = syncPut || mode == ReplicationSync
					asyncPut = asyncPut || mode == ReplicationAsync
				}
				n++
				if r.up {
					rec := &wirepb.ReplRecord{Key: m.key, Value: m.val, Del: m.del}
					if m.ttl > 0 {
						rec.ExpiresUnixMs = now.Add(m.ttl).UnixMilli()
					}
					r.pend = append(r.pend, rec)
					r.appended++
				}
			}
		}
		if n == 0 {
			continue
		}
		shippedAny = true
		if len(op.ship) > 0 || op.noWait { // a copy chunk or an import: nobody waits on the buddy for it
			continue
		}
		switch {
		case syncPut && r.up:
			r.holdLocked(op, now)
		case syncPut && r.state == ReplFenced:
			op.err = fmt.Errorf("%w: stored locally, not acknowledged", ErrFenced)
			r.failed++
		case syncPut && r.cfg.PartitionPolicy == PartitionFail:
			op.err = fmt.Errorf("%w: replication to the buddy is %s (partition_policy fail): stored locally, not acknowledged", ErrUnavailable, r.state)
			r.failed++
		case syncPut && r.cfg.PartitionPolicy == PartitionLocal:
			r.unreplicated++
			r.alarm = "acknowledging replicated enqueues locally only: buddy " + r.state
		case syncPut:
			r.holdLocked(op, now)
		case asyncPut && r.up && int64(r.appended-r.acked) > r.cfg.MaxLag:
			if r.cfg.LagPolicy == LagBlock {
				r.holdLocked(op, now)
			} else {
				r.unreplicated++
				r.alarm = fmt.Sprintf("async lag %d records over max_lag %d", r.appended-r.acked, r.cfg.MaxLag)
			}
		}
	}
	if shippedAny && r.up {
		r.poke(r.kick)
	}
}

func (r *replicator) holdLocked(op *writeOp, now time.Time) {
	op.held = true
	h := &heldOp{op: op, upTo: r.appended, session: r.session, needCopy: !r.up, deadline: now.Add(r.cfg.SyncTimeout)}
	r.held = append(r.held, h)
}

// releaseLocked wakes the held ops the buddy has confirmed, and fails or
// releases the others whose time ran out or whose session is gone, by the
// partition policy.
func (r *replicator) releaseLocked(now time.Time) {
	keep := r.held[:0]
	for _, h := range r.held {
		var err error
		done := false
		switch {
		case r.state == ReplFenced:
			err, done = fmt.Errorf("%w: stored locally, not acknowledged", ErrFenced), true
		case !h.needCopy && r.up && h.session == r.session && r.acked >= h.upTo:
			done = true
		case h.needCopy && r.up && r.state == ReplReplicated:
			done = true
		case !r.up && r.cfg.PartitionPolicy == PartitionLocal:
			done = true
			r.unreplicated++
		case !r.up && r.cfg.PartitionPolicy == PartitionFail:
			err, done = fmt.Errorf("%w: lost the buddy (partition_policy fail): stored locally, not acknowledged", ErrUnavailable), true
		case !now.Before(h.deadline):
			err, done = fmt.Errorf("%w: the buddy did not confirm within sync_timeout %s (replication %s): stored locally, not acknowledged", ErrUnavailable, r.cfg.SyncTimeout, r.state), true
		}
		if !done {
			keep = append(keep, h)
			continue
		}
		if err != nil {
			h.op.err = err
			r.failed++
		}
		close(h.op.done)
	}
	for i := len(keep); i < len(r.held); i++ {
		r.held[i] = nil
	}
	r.held = keep
}

// sessionDownLocked ends the session: the records not confirmed are
// dropped (the next session copies everything again) and the ops waiting
// for them wait for that copy, or fail or go by the partition policy.
func (r *replicator) sessionDownLocked(state string, why error) {
	if r.up {
		r.log.Warn("replication session ended", "buddy", r.buddy.ID(), "epoch", r.epoch, "state", state, "err", why)
	}
	r.up = false
	r.session++
	r.pend = nil
	r.copyFin, r.copyFlagged = false, false
	r.state = state
	if why != nil {
		r.alarm = fmt.Sprintf("replication %s: %v", state, why)
	}
	for _, h := range r.held {
		h.needCopy = true
	}
	r.releaseLocked(time.Now())
}

// shipPending sends the queued records to the buddy, one batch in flight,
// until nothing is left or the session ends.
func (r *replicator) shipPending() {
	maxBytes := r.n.cfg.NATSMaxPayload - 16<<10
	for {
		r.mu.Lock()
		flag := r.copyFin && !r.copyFlagged
		if !r.up || (len(r.pend) == 0 && !flag) {
			r.mu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(r.pend) && n < r.cfg.MaxBatchRecords {
			rs := len(r.pend[n].Key) + len(r.pend[n].Value) + 16
			if n > 0 && size+rs > maxBytes {
				break
			}
			size += rs
			n++
		}
		batch := r.pend[:n:n]
		req := &wirepb.ReplRequest{PrimaryIdc: r.self.IDC, Primary: r.self.Name, Epoch: r.epoch, Seq: r.seq + 1, Records: batch}
		req.CopyDone = r.copyFin && r.acked+uint64(n) >= r.copyEnd
		buddy, session := r.buddy, r.session
		r.mu.Unlock()

		t0 := time.Now()
		reply, err := r.requestUntil(buddy, opReplShip, req, t0.Add(r.cfg.SyncTimeout))
		now := time.Now()
		r.mu.Lock()
		if session != r.session {
			r.mu.Unlock()
			continue
		}
		switch {
		case err == nil:
			r.pend = r.pend[n:]
			r.acked += uint64(n)
			r.ackedTotal += uint64(n)
			r.shipped += uint64(n)
			r.batches++
			r.seq = req.Seq
			r.lastAck, r.rtt = now, now.Sub(t0)
			if req.CopyDone {
				r.copyFlagged = true
				if r.state == ReplCopying {
					r.state = ReplReplicated
					r.alarm = ""
					r.log.Info("replicated: copy confirmed by the buddy", "buddy", buddy.ID(), "epoch", r.epoch, "records", r.copyDone)
				}
			}
			r.releaseLocked(now)
		case isFenced(err, reply):
			r.fenceLocked(err)
		default:
			r.sessionDownLocked(ReplDown, err)
		}
		r.mu.Unlock()
	}
}

// fenceLocked: the buddy runs a newer epoch of this node (it took over).
// Everything waiting fails, pulls stop, and the session loop reconciles.
func (r *replicator) fenceLocked(err error) {
	r.log.Error("fenced: the buddy took this node's tasks over; serving nothing until reconciled", "buddy", r.buddy.ID(), "epoch", r.epoch, "err", err)
	r.last = r.buddy
	r.sessionDownLocked(ReplFenced, err)
	r.gateLocked()
}

// gateLocked holds pulls until reconciled.
func (r *replicator) gateLocked() {
	if !r.reconcile {
		r.gatedAt = time.Now()
	}
	r.reconcile = true
	select {
	case <-r.serving:
		r.serving = make(chan struct{})
	default:
	}
}

func (r *replicator) ungateLocked() {
	r.reconcile = false
	select {
	case <-r.serving:
	default:
		close(r.serving)
	}
}

// waitServing waits until the node serves pulls (it holds them while it
// reconciles with its buddy), at most wait. False: still held.
func (r *replicator) waitServing(ctx context.Context, wait time.Duration) bool {
	r.mu.Lock()
	ch := r.serving
	r.mu.Unlock()
	select {
	case <-ch:
		return true
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}
