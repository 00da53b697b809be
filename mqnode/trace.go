package mqnode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mqnode/tracepb"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// TraceConfig bounds the node's task trace: the events of every task's
// life on this node (enqueue, each lease, each outcome, retries, deferrals,
// subtasks, ack or dead letter), kept in the node's own Badger store.
type TraceConfig struct {
	// Disabled turns the trace off: nothing is recorded, lookups find nothing.
	Disabled bool `yaml:"disabled"`
	// Retention is how long events are kept (Badger TTL). Default 1h: a
	// plain task costs ~440 bytes of trace (enqueue, lease, ack), so
	// 1,000 tasks/s keep ~1.6 GB.
	Retention time.Duration `yaml:"retention"`
	// Sample is the share of tasks traced in full even when nothing goes
	// wrong, chosen by task id (all of a task's events or none, the same
	// on every node and after a restart). Every other task is traced from
	// its first failure on (nack, give-up, lease expiry, dead letter):
	// its enqueue and its first lease are written then, from the task
	// record and the lease, so the trace keeps every task that went wrong
	// whatever the share. Default 0.01. Sample 1 traces every task: about
	// three Badger keys and 4 µs of node CPU per task, which costs the
	// node about a third of its throughput (README, Operations).
	Sample float64 `yaml:"sample"`
	// MaxEventsPerTask caps the events kept of one task (a task retried
	// forever cannot grow its trace without bound). Default 256.
	MaxEventsPerTask int `yaml:"max_events_per_task"`
	// Buffer is how many events may wait to be written; past it events are
	// dropped and counted (the trace never slows the queue). Default 16384.
	Buffer int `yaml:"buffer"`
}

// Trace defaults.
const (
	DefaultTraceRetention        = time.Hour
	DefaultTraceMaxEventsPerTask = 256
	DefaultTraceBuffer           = 16384
	DefaultTraceSample           = 0.01
)

// WithDefaults fills the zero fields.
func (c TraceConfig) WithDefaults() TraceConfig {
	setDefault(&c.Retention, DefaultTraceRetention)
	setDefault(&c.MaxEventsPerTask, DefaultTraceMaxEventsPerTask)
	setDefault(&c.Buffer, DefaultTraceBuffer)
	setDefault(&c.Sample, DefaultTraceSample)
	return c
}

// Validate names the bad field.
func (c TraceConfig) Validate() error {
	if c.Retention < time.Second || c.MaxEventsPerTask < 1 || c.Buffer < 1 {
		return fmt.Errorf("trace: need retention >= 1s, max_events_per_task >= 1, buffer >= 1 (got %s, %d, %d)", c.Retention, c.MaxEventsPerTask, c.Buffer)
	}
	if !(c.Sample > 0 && c.Sample <= 1) {
		return fmt.Errorf("trace.sample %v: want a share in (0, 1] (trace.disabled turns the trace off)", c.Sample)
	}
	return nil
}

// Trace event kinds.
const (
	TraceEnqueue = "enqueue" // stored on this node (Producer, Parent for a subtask)
	TraceLease   = "lease"   // delivered to a worker (Worker, Host, WorkerIDC, Tier, Attempt)
	TraceAck     = "ack"     // done (Duration: lease to settle)
	TraceNack    = "nack"    // failed (Error, Duration)
	TraceGiveUp  = "give-up" // the handler gave up (Error, Duration)
	TraceExpire  = "lease-expired"
	TraceRetry   = "retry"   // ready again after Delay (Attempt = the next attempt)
	TraceDefer   = "defer"   // the retry gate held a retry back for Delay
	TraceSpawn   = "subtask" // the ack enqueued subtask Child
	TraceDead    = "dead"    // moved to the dead letter queue (Error = reason)
)

// TraceEvent is one step of a task's life on one node (see tracepb).
type TraceEvent = tracepb.Event

// WorkerInfo is what a node knows of a worker from the mesh membership.
type WorkerInfo struct {
	IDC, Host, Node string
}

// pfxTrace keys: x|task id|seq (8): one tracepb.Event (Badger TTL).
const pfxTrace = 'x'

func traceKey(id string, seq uint64) []byte {
	b := make([]byte, 0, 1+len(id)+8)
	b = append(append(b, pfxTrace), id...)
	return binary.BigEndian.AppendUint64(b, seq)
}

// tracer records events asynchronously: hooks on the hot path only append
// to a bounded channel; one goroutine batches them into writes that share
// the node's group commit.
type tracer struct {
	s       *store
	cfg     TraceConfig
	ch      chan *TraceEvent
	dropped atomic.Uint64
	seq     atomic.Uint64
	stop    chan struct{} // closed by close; ch is never closed (hooks may still send)
	done    chan struct{}

	mu      sync.Mutex
	counts  map[string]int // events recorded per task in this run (bounded by eviction)
	pending []mutation     // encoded events waiting for a write group
}

func newTracer(s *store) *tracer {
	t := &tracer{s: s, cfg: s.cfg.Trace, stop: make(chan struct{}), done: make(chan struct{}), counts: map[string]int{}}
	if !t.cfg.Disabled {
		t.ch = make(chan *TraceEvent, t.cfg.Buffer)
		t.seq.Store(uint64(s.nowMs()) << 20) // increasing across restarts
		go t.run()
	} else {
		close(t.done)
	}
	return t
}

// keeps says whether the events of task tk are recorded: a sampled
// task's always, any task's once it has failed (a failed delivery, or a
// last error: a dead letter requeued keeps its reason there).
func (t *tracer) keeps(tk *wirepb.Task) bool {
	return t.on() && (tk.Attempt > 0 || tk.LastError != "" || t.sampled(tk.Id))
}

// keepsNew says whether the events of a new task (no failure yet) are
// recorded: a sampled one's.
func (t *tracer) keepsNew(id string) bool {
	return t.on() && t.sampled(id)
}

// on says whether the tracer records anything (not disabled).
func (t *tracer) on() bool { return t != nil && t.ch != nil }

// record queues e; it never blocks. The caller has decided that e is kept
// (keeps).
func (t *tracer) record(e *TraceEvent) {
	if !t.on() {
		return
	}
	if e.TimeUnixMs == 0 {
		e.TimeUnixMs = time.Now().UnixMilli()
	}
	e.Idc, e.Node = t.s.cfg.IDC, t.s.cfg.Name
	select {
	case t.ch <- e:
	default:
		t.dropped.Add(1)
	}
}

// sampled says whether task id is traced: the same answer for every event
// of a task, on every node and after a restart.
func (t *tracer) sampled(id string) bool {
	if t.cfg.Sample >= 1 {
		return true
	}
	return float64(xxhash.Sum64String(id)) < t.cfg.Sample*(1<<64)
}

// close writes what is buffered and stops the tracer; events recorded
// later are dropped. Call it before the writer closes.
func (t *tracer) close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	<-t.done
}

// Trace writes ride the node's task writes: encoded events wait in
// pending, and the writer adds them to its next group of task operations
// (same transaction, same fsync: piggyback). Only when no task write came
// for traceFlushEvery, or pending grows past traceMaxPending, does the
// tracer write them itself.
const (
	traceFlushEvery = 50 * time.Millisecond
	traceMaxPending = 8192
)

func (t *tracer) run() {
	defer close(t.done)
	batch := make([]*TraceEvent, 0, 512)
	tick := time.NewTicker(traceFlushEvery)
	defer tick.Stop()
	for {
		select {
		case e := <-t.ch:
			if t.encode(t.fill(append(batch[:0], e))) >= traceMaxPending {
				t.flush()
			}
		case <-tick.C:
			t.flush()
		case <-t.stop:
			for b := t.fill(batch[:0]); len(b) > 0; b = t.fill(batch[:0]) {
				t.encode(b)
			}
			t.flush()
			return
		}
	}
}

// fill adds what is waiting, up to the batch's capacity.
func (t *tracer) fill(batch []*TraceEvent) []*TraceEvent {
	for len(batch) < cap(batch) {
		select {
		case e := <-t.ch:
			batch = append(batch, e)
		default:
			return batch
		}
	}
	return batch
}

// encode adds a batch to pending and returns how many mutations wait.
func (t *tracer) encode(batch []*TraceEvent) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.counts) > 1<<16 {
		clear(t.counts) // forget old tasks; the cap is per run of the map
	}
	for _, e := range batch {
		if t.counts[e.TaskId] >= t.cfg.MaxEventsPerTask {
			t.dropped.Add(1)
			continue
		}
		t.counts[e.TaskId]++
		// The key holds the task id and every event is this node's: the
		// stored value leaves them out (lookup puts them back).
		id := e.TaskId
		e.TaskId, e.Idc, e.Node = "", "", ""
		b, err := proto.Marshal(e)
		if err != nil {
			continue
		}
		t.pending = append(t.pending, mutation{key: traceKey(id, t.seq.Add(1)), val: b, ttl: t.cfg.Retention})
	}
	return len(t.pending)
}

// op takes what is pending as a write op that holds no scan back (nil
// when nothing waits). The writer calls it for each group of task writes.
func (t *tracer) op() *writeOp {
	if t == nil || t.ch == nil {
		return nil
	}
	t.mu.Lock()
	muts := t.pending
	t.pending = nil
	t.mu.Unlock()
	if len(muts) == 0 {
		return nil
	}
	return &writeOp{aside: true, done: make(chan struct{}),
		prepare: func(w *wtx) error {
			w.muts = append(w.muts, muts...)
			return nil
		},
		failed: func(err error) {
			t.dropped.Add(uint64(len(muts)))
			t.s.log.Debug("trace events not written", "events", len(muts), "err", err)
		}}
}

// flush writes what is pending on its own (no task write took it). Safe
// from any goroutine.
func (t *tracer) flush() {
	op := t.op()
	if op == nil {
		return
	}
	op.done = nil // submit makes it
	if err := t.s.w.do(context.Background(), op); errors.Is(err, ErrClosed) {
		t.dropped.Add(1)
	}
}

// lookup returns the events of a task, oldest first.
func (t *tracer) lookup(id string) ([]*TraceEvent, error) {
	t.flush() // what is encoded but waits for a write group: write it first
	prefix := append([]byte{pfxTrace}, id...)
	var out []*TraceEvent
	err := t.s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if len(it.Item().Key()) != len(prefix)+8 {
				continue // a longer id sharing this prefix
			}
			e := &TraceEvent{}
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, e) }); err != nil {
				continue
			}
			e.TaskId, e.Idc, e.Node = id, t.s.cfg.IDC, t.s.cfg.Name
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: trace lookup: %w", ErrStorage, err)
	}
	return out, nil
}

// Trace returns the events this node recorded of task id, oldest first
// (nil when it knows nothing of it).
func (n *Node) Trace(id string) ([]*TraceEvent, error) {
	n.mu.Lock()
	st := n.st
	n.mu.Unlock()
	if st == nil {
		return nil, ErrClosed
	}
	return st.obs.tr.lookup(id)
}

// SetWorkerInfo installs how the node learns a worker's IDC, host and own
// node from its id (the mesh's membership), so trace events name where a
// task ran. Safe at any time; f must be fast and safe for concurrent use.
func (n *Node) SetWorkerInfo(f func(workerID string) (WorkerInfo, bool)) {
	n.workerInfo.Store(&f)
}
