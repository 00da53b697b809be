package mqnode

import (
	"cmp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// HeaderProducer is a task header naming who enqueued the task. When set
// it wins over the request's producer (EnqueueRequest.producer, which
// Client.Enqueue fills with the connection's name @ host); the node keeps
// the result in Task.Producer, which the trace and the handler see.
const HeaderProducer = "mqmesh-producer"

// HeaderTraceParent is the W3C trace context header carried by a task.
const HeaderTraceParent = "traceparent"

// observer is what the hot path tells the node's metrics and trace. Every
// method is cheap, never blocks, and is safe on a nil observer.
type observer struct {
	s  *store
	tr *tracer

	workerInfo *atomic.Pointer[func(string) (WorkerInfo, bool)]
	leaseTiers [4]atomic.Uint64 // leases by tierUnknown..tierOther (summary.go)

	enqueueLatency  *prometheus.HistogramVec // queue
	scheduleToStart *prometheus.HistogramVec // queue
	enqueueToDone   *prometheus.HistogramVec // queue
	settleAfter     *prometheus.HistogramVec // queue, outcome: lease to settle
	deduplicated    *prometheus.CounterVec   // queue
	expired         *prometheus.CounterVec   // queue: dead by retention
	commitOps       prometheus.Histogram
	commitLatency   prometheus.Histogram
}

// latencyBuckets span 1 ms to ~2 min.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2.5, 14)

func newObserver(s *store) *observer {
	o := &observer{s: s}
	o.tr = newTracer(s)
	o.initMetrics()
	return o
}

func (o *observer) initMetrics() {
	o.enqueueLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "mqmesh_enqueue_duration_seconds", Help: "Time to store an enqueue batch durably (request received to durable).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	}, []string{"queue"})
	o.scheduleToStart = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "mqmesh_schedule_to_start_seconds", Help: "Time from a task becoming ready (enqueue or not-before) to its first lease.",
		Buckets: latencyBuckets,
	}, []string{"queue"})
	o.enqueueToDone = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "mqmesh_enqueue_to_done_seconds", Help: "Time from enqueue to the ack of a task, retries included.",
		Buckets: latencyBuckets,
	}, []string{"queue"})
	o.settleAfter = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "mqmesh_lease_duration_seconds", Help: "Time from lease to settlement, by outcome (ack, nack, give-up): handler time plus the ack's trip.",
		Buckets: latencyBuckets,
	}, []string{"queue", "outcome"})
	o.deduplicated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mqmesh_queue_deduplicated_total", Help: "Enqueued tasks dropped as duplicates of an earlier enqueue (producer dedup key), since the node started.",
	}, []string{"queue"})
	o.expired = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mqmesh_queue_expired_total", Help: "Tasks moved to the dead letter queue because their retention ran out, since the node started.",
	}, []string{"queue"})
	o.commitOps = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "mqmesh_group_commit_ops", Help: "Write operations that shared one group commit (one Badger transaction and fsync).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 13),
	})
	o.commitLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "mqmesh_group_commit_duration_seconds", Help: "Time to commit one write group (with durability fsync: the fsync latency).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
}

func (o *observer) collectors() []prometheus.Collector {
	return []prometheus.Collector{o.enqueueLatency, o.scheduleToStart, o.enqueueToDone, o.settleAfter,
		o.deduplicated, o.expired, o.commitOps, o.commitLatency}
}

// traceOp returns the pending trace events as an op for a group of task
// writes (nil for a group of trace writes only, or with nothing pending).
func (o *observer) traceOp(group []*writeOp) *writeOp {
	if o == nil || !slices.ContainsFunc(group, func(op *writeOp) bool { return !op.aside }) {
		return nil
	}
	return o.tr.op()
}

func (o *observer) close() {
	if o != nil {
		o.tr.close()
	}
}

// enqueued: a batch is durable (start: when the request arrived). parent
// is the task whose ack spawned these subtasks ("" for a producer's);
// producer is the request's (an item's HeaderProducer wins).
func (o *observer) enqueued(queue string, items []*wirepb.EnqueueItem, res []*wirepb.EnqueueResult, start time.Time, parent, producer string) {
	if o == nil {
		return
	}
	if !start.IsZero() {
		o.enqueueLatency.WithLabelValues(queue).Observe(time.Since(start).Seconds())
	}
	now := time.Now().UnixMilli()
	dups := 0
	for i, r := range res {
		if r == nil || i >= len(items) {
			continue
		}
		if r.Duplicate {
			dups++
			continue
		}
		h := items[i].Headers
		if o.tr.keepsNew(r.Id) {
			o.tr.record(&TraceEvent{TimeUnixMs: now, Kind: TraceEnqueue, TaskId: r.Id, Queue: queue,
				Producer: cmp.Or(h[HeaderProducer], producer), Traceparent: h[HeaderTraceParent], Parent: parent, DelayMs: items[i].DelayMs})
		}
		if parent != "" && o.tr.keepsNew(parent) {
			o.tr.record(&TraceEvent{TimeUnixMs: now, Kind: TraceSpawn, TaskId: parent, Queue: queue, Child: r.Id})
		}
	}
	if dups > 0 {
		o.deduplicated.WithLabelValues(queue).Add(float64(dups))
	}
}

// leased: a task was delivered to worker (called under the queue's lock).
func (o *observer) leased(q *queue, t *wirepb.Task, worker string, now int64) {
	if o == nil {
		return
	}
	if t.Attempt == 0 {
		readyAt := max(t.CreatedUnixMs, t.NotBeforeUnixMs)
		o.scheduleToStart.WithLabelValues(q.name).Observe(float64(max(now-readyAt, 0)) / 1000)
	}
	e := &TraceEvent{TimeUnixMs: now, Kind: TraceLease, TaskId: t.Id, Queue: q.name, Attempt: t.Attempt + 1}
	o.describe(worker, e)
	o.leaseTiers[tierIndex[e.Tier]].Add(1)
	if o.tr.keeps(t) {
		o.tr.record(e)
	}
}

// failedOnce records a task's first failure at its first delivery (l) or
// before any (l nil). A task outside the sample has no events yet: its
// enqueue (from the task record) and its lease are written first, so its
// trace is whole from here on (TraceConfig.Sample).
func (o *observer) failedOnce(t *wirepb.Task, queue string, l *lease, e *TraceEvent) {
	if !o.tr.on() {
		return
	}
	if o.tr.keeps(t) {
		o.tr.record(e)
		return
	}
	delay := int64(0)
	if t.NotBeforeUnixMs > t.CreatedUnixMs {
		delay = t.NotBeforeUnixMs - t.CreatedUnixMs
	}
	o.tr.record(&TraceEvent{TimeUnixMs: t.CreatedUnixMs, Kind: TraceEnqueue, TaskId: t.Id, Queue: queue,
		Producer: cmp.Or(t.Producer, t.Headers[HeaderProducer]), Traceparent: t.Headers[HeaderTraceParent], DelayMs: delay})
	if l != nil {
		le := &TraceEvent{TimeUnixMs: l.started(), Kind: TraceLease, TaskId: t.Id, Queue: queue, Attempt: 1}
		o.describe(l.worker, le)
		o.tr.record(le)
	}
	o.tr.record(e)
}

// settled: a lease ended by the worker's ack, nack or give-up.
func (o *observer) settled(l *lease, kind wirepb.AckKind, errText string, now int64) {
	if o == nil {
		return
	}
	d := max(now-l.started(), 0)
	e := &TraceEvent{TimeUnixMs: now, TaskId: l.task.Id, Queue: l.q.name, Attempt: l.task.Attempt + 1, DurationMs: d, Error: errText}
	o.describe(l.worker, e)
	outcome := "ack"
	switch kind {
	case wirepb.AckKind_ACK:
		e.Kind = TraceAck
		o.enqueueToDone.WithLabelValues(l.q.name).Observe(float64(max(now-l.task.CreatedUnixMs, 0)) / 1000)
	case wirepb.AckKind_NACK:
		e.Kind, outcome = TraceNack, "nack"
	default:
		e.Kind, outcome = TraceGiveUp, "give-up"
	}
	o.settleAfter.WithLabelValues(l.q.name, outcome).Observe(float64(d) / 1000)
	if kind == wirepb.AckKind_ACK {
		if o.tr.keeps(l.task) {
			o.tr.record(e)
		}
		return
	}
	o.failedOnce(l.task, l.q.name, l, e)
}

// expiredLease: a lease ran out or its worker left.
func (o *observer) expiredLease(l *lease, why string) {
	if o == nil {
		return
	}
	e := &TraceEvent{Kind: TraceExpire, TaskId: l.task.Id, Queue: l.q.name, Attempt: l.task.Attempt + 1, Error: why}
	o.describe(l.worker, e)
	o.failedOnce(l.task, l.q.name, l, e)
}

// retried: a failed task is ready again after delay, for attempt.
func (o *observer) retried(q *queue, t *wirepb.Task, delay time.Duration) {
	if o != nil && o.tr.keeps(t) {
		o.tr.record(&TraceEvent{Kind: TraceRetry, TaskId: t.Id, Queue: q.name, Attempt: t.Attempt + 1, DelayMs: delay.Milliseconds(), Error: t.LastError})
	}
}

// deferred: the retry gate put a retry back for d.
func (o *observer) deferred(q *queue, t *wirepb.Task, d time.Duration) {
	if o != nil && o.tr.keeps(t) {
		o.tr.record(&TraceEvent{Kind: TraceDefer, TaskId: t.Id, Queue: q.name, Attempt: t.Attempt + 1, DelayMs: d.Milliseconds()})
	}
}

// dead: a task went to the dead letter queue (t nil: a corrupt record).
func (o *observer) dead(q *queue, t *wirepb.Task, reason string) {
	if o == nil {
		return
	}
	if strings.HasPrefix(reason, "expired") {
		o.expired.WithLabelValues(q.name).Inc()
	}
	if t != nil {
		o.failedOnce(t, q.name, nil, &TraceEvent{Kind: TraceDead, TaskId: t.Id, Queue: q.name, Attempt: t.Attempt, Error: reason})
	}
}

// committed: one write group of ops committed in d.
func (o *observer) committed(ops int, d time.Duration) {
	if o != nil {
		o.commitOps.Observe(float64(ops))
		o.commitLatency.Observe(d.Seconds())
	}
}

// describe fills in the worker of an event and where it runs; holder is
// what the lease records: the worker id, "@", its mesh membership.
func (o *observer) describe(holder string, e *TraceEvent) {
	worker, _, _ := strings.Cut(holder, "@")
	e.Worker = worker
	if worker == "" || o.workerInfo == nil {
		return
	}
	f := o.workerInfo.Load()
	if f == nil || *f == nil {
		return
	}
	wi, ok := (*f)(worker)
	if !ok {
		return
	}
	e.Host, e.WorkerIdc = wi.Host, wi.IDC
	switch {
	case wi.IDC != o.s.cfg.IDC:
		e.Tier = "other"
	case wi.Node == o.s.cfg.Name:
		e.Tier = "local"
	default:
		e.Tier = "idc"
	}
}
