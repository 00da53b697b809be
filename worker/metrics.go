package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of a pool: counters read from Stats at scrape time, histograms
// fed as tasks finish. Labels: queue and tier (local, idc, other: where the
// task came from); register the collector wrapped with the pool's
// constant labels (see Collector).
var (
	mProcessed = prometheus.NewDesc("mqmesh_worker_tasks_processed_total", "Tasks handled (any outcome), by where they came from.", []string{"tier"}, nil)
	mPulls     = prometheus.NewDesc("mqmesh_worker_pulls_total", "Pull requests, by where they went.", []string{"tier"}, nil)
	mEmpty     = prometheus.NewDesc("mqmesh_worker_empty_pulls_total", "Pull requests that got nothing, by where they went.", []string{"tier"}, nil)
	mRetries   = prometheus.NewDesc("mqmesh_worker_retries_total", "Handler results asking for a retry.", nil, nil)
	mGiveUps   = prometheus.NewDesc("mqmesh_worker_give_ups_total", "Handler results giving up (dead letter).", nil, nil)
	mExtends   = prometheus.NewDesc("mqmesh_worker_lease_extensions_total", "Lease extensions sent while handlers ran.", nil, nil)
	mLost      = prometheus.NewDesc("mqmesh_worker_leases_lost_total", "Leases lost while the handler ran (the task was not settled).", nil, nil)
	mAckErrs   = prometheus.NewDesc("mqmesh_worker_ack_errors_total", "Acks the node refused or did not answer.", nil, nil)
	mBusy      = prometheus.NewDesc("mqmesh_worker_busy_slots", "Slots running a handler now.", nil, nil)
	mSlots     = prometheus.NewDesc("mqmesh_worker_slots", "Slots of the pool.", nil, nil)
)

var tierLabels = [4]string{"", "local", "idc", "other"}

type poolMetrics struct {
	handler, startDelay, done *prometheus.HistogramVec
}

var workerBuckets = prometheus.ExponentialBuckets(0.001, 2.5, 14)

func newPoolMetrics() *poolMetrics {
	return &poolMetrics{
		handler: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mqmesh_worker_handler_duration_seconds", Help: "Handler run time, by queue, tier and outcome (done, retry, give-up).", Buckets: workerBuckets,
		}, []string{"queue", "tier", "outcome"}),
		startDelay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mqmesh_worker_enqueue_to_start_seconds", Help: "Time from enqueue to a handler starting, first attempts, by queue and tier (clocks of two hosts).", Buckets: workerBuckets,
		}, []string{"queue", "tier"}),
		done: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mqmesh_worker_enqueue_to_done_seconds", Help: "Time from enqueue to a handler finishing with done, by queue and tier (clocks of two hosts).", Buckets: workerBuckets,
		}, []string{"queue", "tier"}),
	}
}

var outcomeLabels = map[outcome]string{outcomeDone: "done", outcomeRetry: "retry", outcomeGiveUp: "give-up"}

// observe records one handled task that started at start.
func (m *poolMetrics) observe(t *Task, where Where, o outcome, start time.Time) {
	now := time.Now()
	tier := tierLabels[where]
	m.handler.WithLabelValues(t.Queue, tier, outcomeLabels[o]).Observe(now.Sub(start).Seconds())
	if t.Attempt == 1 {
		m.startDelay.WithLabelValues(t.Queue, tier).Observe(max(start.Sub(t.Created), 0).Seconds())
	}
	if o == outcomeDone {
		m.done.WithLabelValues(t.Queue, tier).Observe(max(now.Sub(t.Created), 0).Seconds())
	}
}

// Collector returns the pool's Prometheus collector: its counters, its
// histograms and the backlog notices its view received. Register it
// wrapped with the pool's labels:
//
//	c := p.Config()
//	prometheus.WrapRegistererWith(prometheus.Labels{"idc": c.IDC, "host": c.Host, "pool": c.ID}, reg).MustRegister(p.Collector())
func (p *Pool) Collector() prometheus.Collector { return poolCollector{p} }

type poolCollector struct{ p *Pool }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mProcessed, mPulls, mEmpty, mRetries, mGiveUps, mExtends, mLost, mAckErrs, mBusy, mSlots} {
		ch <- d
	}
	c.p.metrics.handler.Describe(ch)
	c.p.metrics.startDelay.Describe(ch)
	c.p.metrics.done.Describe(ch)
	c.p.view.Collector().Describe(ch)
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.Stats()
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	for w := Local; w <= OtherIDC; w++ {
		counter(mProcessed, s.Processed[w], tierLabels[w])
		counter(mPulls, s.Pulls[w], tierLabels[w])
		counter(mEmpty, s.EmptyPulls[w], tierLabels[w])
	}
	counter(mRetries, s.Retries)
	counter(mGiveUps, s.GiveUps)
	counter(mExtends, s.Extensions)
	counter(mLost, s.LeaseLost)
	counter(mAckErrs, s.AckErrors)
	ch <- prometheus.MustNewConstMetric(mBusy, prometheus.GaugeValue, float64(s.Busy))
	ch <- prometheus.MustNewConstMetric(mSlots, prometheus.GaugeValue, float64(c.p.cfg.Slots))
	c.p.metrics.handler.Collect(ch)
	c.p.metrics.startDelay.Collect(ch)
	c.p.metrics.done.Collect(ch)
	c.p.view.Collector().Collect(ch)
}
