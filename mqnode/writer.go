package mqnode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// writeOp is one unit of atomic change. prepare runs on the writer goroutine:
// it may read (its reads see the writes of earlier ops in the same group) and
// records mutations on the wtx; it must not have other side effects, because
// it may be run a second time when a group has to be split. after runs once
// the mutations are durable, before the op's caller is woken. Either all of
// an op's mutations commit or none do.
type writeOp struct {
	prepare func(w *wtx) error
	after   func()
	failed  func(error) // runs on the writer goroutine when the op failed
	// aside: the op writes no task keys (trace events), so a group of
	// only such ops does not hold cursor scans back (store.horizon).
	aside bool
	fx    []effect
	err   error
	done  chan struct{}

	// Replication (replship.go): the committed mutations and the records
	// to ship without writing them (re-replication copy); held: the
	// replicator closes done once the buddy has the writes.
	muts, ship []mutation
	held       bool
	noWait     bool // the caller does not wait for the buddy (takeover import)
}

// effect is an in-memory consequence of a committed op on a queue's state:
// counter deltas and, for a new task key, its readyAt (which may wake
// pullers or arm the delay timer).
type effect struct {
	q                    *queue
	stored, leased, dead int64
	readyAt              int64  // > 0: a task key was written with this readyAt
	onCommit             func() // runs after commit (settled-task accounting)
}

type mutation struct {
	key, val []byte
	ttl      time.Duration
	del      bool
}

// wtx is the view an op's prepare gets of the open transaction.
type wtx struct {
	s    *store
	txn  *badger.Txn
	muts []mutation
	fx   []effect
	ship []mutation // records shipped to the buddy only (replcopy.go)
}

func (w *wtx) effect(e effect) { w.fx = append(w.fx, e) }

func (w *wtx) set(k, v []byte) { w.muts = append(w.muts, mutation{key: k, val: v}) }
func (w *wtx) setTTL(k, v []byte, ttl time.Duration) {
	w.muts = append(w.muts, mutation{key: k, val: v, ttl: ttl})
}
func (w *wtx) del(k []byte) { w.muts = append(w.muts, mutation{key: k, del: true}) }

// get reads k as of the open transaction; nil, nil when absent.
func (w *wtx) get(k []byte) ([]byte, error) {
	it, err := w.txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return it.ValueCopy(nil)
}

// stamp returns the current monotonic ms; every stamp of a group is >= the
// group's first, which the scan horizon relies on.
func (w *wtx) stamp() int64 { return w.s.nowMs() }

// nextSeq returns a node-wide, strictly increasing sequence number.
func (w *wtx) nextSeq() (uint64, error) {
	n, err := w.s.seq.Next()
	if err != nil {
		return 0, fmt.Errorf("%w: sequence: %w", ErrStorage, err)
	}
	return n + 1, nil
}

// writer is the single goroutine that owns Badger writes (group commit).
type writer struct {
	s      *store
	ops    chan *writeOp
	mu     sync.RWMutex // held shared by submitters, exclusively by close
	closed bool
	done   chan struct{}

	maxBytes, maxCount int64
}

const maxGroupOps = 4096

func newWriter(s *store) *writer {
	w := &writer{
		s:        s,
		ops:      make(chan *writeOp, maxGroupOps),
		done:     make(chan struct{}),
		maxBytes: s.db.MaxBatchSize() * 8 / 10,
		maxCount: s.db.MaxBatchCount() * 8 / 10,
	}
	go w.run()
	return w
}

// submit queues op without waiting for it.
func (w *writer) submit(op *writeOp) error {
	op.done = make(chan struct{})
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return ErrClosed
	}
	w.ops <- op
	return nil
}

// do submits op and waits until it is durable (or failed). A cancelled ctx
// stops the wait, not the write.
func (w *writer) do(ctx context.Context, op *writeOp) error {
	if err := w.submit(op); err != nil {
		return err
	}
	select {
	case <-op.done:
		return op.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *writer) close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.ops)
	}
	w.mu.Unlock()
	<-w.done
}

func (w *writer) run() {
	defer close(w.done)
	group := make([]*writeOp, 0, maxGroupOps)
	for op := range w.ops {
		group = append(group[:0], op)
	fill:
		for len(group) < maxGroupOps {
			select {
			case op, ok := <-w.ops:
				if !ok {
					break fill
				}
				group = append(group, op)
			default:
				break fill
			}
		}
		if op := w.s.obs.traceOp(group); op != nil {
			group = append(group, op) // trace events ride this group's commit
		}
		w.commitGroup(group)
	}
}

// commitGroup applies a group in as few transactions as the size limits
// allow, then finishes every op.
func (w *writer) commitGroup(group []*writeOp) {
	t0 := time.Now()
	w.s.gcMu.Lock()
	tasks := slices.ContainsFunc(group, func(op *writeOp) bool { return !op.aside })
	if tasks {
		w.s.beginGroup()
	}
	if err := w.tryGroup(group); errors.Is(err, errSplitGroup) {
		// A mutation failed (e.g. the size estimate was off): fall back to
		// one transaction per op so no op commits in part.
		for _, op := range group {
			op.err = nil
			_ = w.tryGroup([]*writeOp{op})
		}
	}
	w.s.gcMu.Unlock()
	w.s.obs.committed(len(group), time.Since(t0))
	// Committed: scans may pass these keys now, before anyone is told.
	if tasks {
		w.s.endGroup()
	}
	now := w.s.nowMs()
	for _, op := range group {
		if op.err == nil {
			for _, e := range op.fx {
				e.q.apply(e, now)
			}
			if op.after != nil {
				op.after()
			}
		} else if op.failed != nil {
			op.failed(op.err)
		}
	}
	// The one call-out of replication: ship the group's writes in commit
	// order, holding the ops that must wait for the buddy.
	if r := w.s.repl.Load(); r != nil {
		r.committed(group)
	}
	for _, op := range group {
		if !op.held {
			close(op.done)
		}
	}
}

// tryGroup runs the ops, committing whenever the next op would not fit.
// It returns errSplitGroup only when nothing was committed and the caller
// should retry op by op.
func (w *writer) tryGroup(group []*writeOp) error {
	txn := w.s.db.NewTransaction(true)
	var inTxn []*writeOp
	var bytes, count int64
	committedAny := false
	commit := func() error {
		p := w.s.ledger.begin(inTxn)
		err := storageErr(txn.Commit())
		w.s.ledger.end(p, err == nil)
		for _, op := range inTxn {
			if op.err == nil {
				op.err = err
			}
		}
		committedAny = true
		inTxn = inTxn[:0]
		bytes, count = 0, 0
		txn = w.s.db.NewTransaction(true)
		return err
	}
	defer func() { txn.Discard() }()
	for _, op := range group {
		wt := &wtx{s: w.s, txn: txn}
		if err := op.prepare(wt); err != nil {
			op.err = err
			continue
		}
		var b int64
		for _, m := range wt.muts {
			b += int64(len(m.key)) + 32
			if int64(len(m.val)) < w.s.cfg.ValueThreshold {
				b += int64(len(m.val))
			}
		}
		if b > w.maxBytes || int64(len(wt.muts)) > w.maxCount {
			op.err = fmt.Errorf("%w: one operation of %d bytes in %d records exceeds a transaction", ErrPayloadTooLarge, b, len(wt.muts))
			continue
		}
		if bytes+b > w.maxBytes || count+int64(len(wt.muts)) > w.maxCount {
			_ = commit()
			// The op's reads stay valid: the state they saw is now committed.
			wt.txn = txn
		}
		if err := applyMutations(txn, wt.muts); err != nil {
			if len(group) > 1 && !committedAny {
				for _, o := range group {
					o.err = nil
				}
				return errSplitGroup
			}
			// The open transaction holds part of this op: drop it whole and
			// fail the ops that were in it (callers see an error and retry).
			op.err = storageErr(err)
			for _, o := range inTxn {
				o.err = op.err
			}
			txn.Discard()
			txn = w.s.db.NewTransaction(true)
			inTxn = inTxn[:0]
			bytes, count = 0, 0
			continue
		}
		bytes += b
		count += int64(len(wt.muts))
		op.fx, op.muts, op.ship = wt.fx, wt.muts, wt.ship
		inTxn = append(inTxn, op)
	}
	if len(inTxn) > 0 {
		_ = commit()
	}
	return nil
}

var errSplitGroup = errors.New("split group")

func applyMutations(txn *badger.Txn, muts []mutation) error {
	for _, m := range muts {
		var err error
		switch {
		case m.del:
			err = txn.Delete(m.key)
		case m.ttl > 0:
			err = txn.SetEntry(badger.NewEntry(m.key, m.val).WithTTL(m.ttl))
		default:
			err = txn.Set(m.key, m.val)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
