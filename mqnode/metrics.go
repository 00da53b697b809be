package mqnode

import (
	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shirou/gopsutil/v4/disk"
)

// Metrics of a node. The gauges and counters are read from the node's own
// state at scrape time (the same numbers `mqmesh stats` shows); the
// histograms are fed by the hot path. Register the collector under
// constant labels idc and node (see Collector).
var (
	mReady     = nodeDesc("mqmesh_queue_ready_tasks", "Tasks ready to be delivered now.", "queue")
	mLeased    = nodeDesc("mqmesh_queue_leased_tasks", "Tasks delivered and not yet settled.", "queue")
	mDelayed   = nodeDesc("mqmesh_queue_delayed_tasks", "Tasks waiting for their not-before time (delays, retry backoff).", "queue")
	mDead      = nodeDesc("mqmesh_queue_dead_tasks", "Tasks in the dead letter queue.", "queue")
	mOldest    = nodeDesc("mqmesh_queue_oldest_ready_age_seconds", "Age of the oldest ready task (0 with none).", "queue")
	mEnq       = nodeDesc("mqmesh_queue_enqueued_total", "Tasks stored (producers' and subtasks), duplicates excluded, since the node started.", "queue")
	mAcked     = nodeDesc("mqmesh_queue_acked_total", "Tasks acknowledged done, since the node started.", "queue")
	mNacked    = nodeDesc("mqmesh_queue_nacked_total", "Deliveries that failed (nack), since the node started.", "queue")
	mLeaseExp  = nodeDesc("mqmesh_queue_lease_expired_total", "Leases that ran out (or whose worker left), since the node started.", "queue")
	mDeadL     = nodeDesc("mqmesh_queue_dead_lettered_total", "Tasks moved to the dead letter queue, since the node started.", "queue")
	mDeferred  = nodeDesc("mqmesh_queue_retries_deferred_total", "Retries the retry gate put back, since the node started.", "queue")
	mKept      = nodeDesc("mqmesh_queue_settled_kept_tasks", "Settled tasks kept for replay (keep_settled).", "queue")
	mKeptBytes = nodeDesc("mqmesh_queue_settled_kept_bytes", "Bytes the settled tasks kept for replay hold (keys and records).", "queue")

	mThrActive = nodeDesc("mqmesh_throttle_active", "1 while a throttle holds dispatch back (kind retry, cpu or budget; queue empty for the node-wide CPU throttle).", "queue", "kind", "backend")
	mThrLimit  = nodeDesc("mqmesh_throttle_limit_per_second", "A throttle's current limit (retries/s, tasks/s or calls/s; 0 = none).", "queue", "kind", "backend")
	mThrHeld   = nodeDesc("mqmesh_throttle_deferred_total", "Tasks a throttle held back, in total.", "queue", "kind", "backend")

	mBudget      = nodeDesc("mqmesh_backend_budget_calls_per_second", "A backend's mesh-wide budget (0 = none).", "backend")
	mNodeUsage   = nodeDesc("mqmesh_backend_node_usage_calls_per_second", "Calls/s to a backend by tasks this node dispatched.", "backend")
	mMeshUsage   = nodeDesc("mqmesh_backend_mesh_usage_calls_per_second", "Calls/s to a backend reported by every node.", "backend")
	mShare       = nodeDesc("mqmesh_backend_share_calls_per_second", "This node's share of a backend's budget.", "backend")
	mConstrained = nodeDesc("mqmesh_backend_constrained", "1 when the budget share held dispatch back lately.", "backend")

	mLSM      = nodeDesc("mqmesh_badger_lsm_size_bytes", "Size of Badger's LSM tree files.")
	mVlog     = nodeDesc("mqmesh_badger_vlog_size_bytes", "Size of Badger's value-log files.")
	mFree     = nodeDesc("mqmesh_disk_free_bytes", "Free bytes on the file system of the data directory.")
	mDiskSize = nodeDesc("mqmesh_disk_size_bytes", "Size of the file system of the data directory.")
	mLeases   = nodeDesc("mqmesh_leases", "Deliveries under lease on this node.")
	mRoutes   = nodeDesc("mqmesh_nats_routes", "NATS route connections (to the nodes of this IDC).")
	mGateways = nodeDesc("mqmesh_nats_gateways", "NATS gateway connections (to other IDCs), by direction.", "direction")
	mClients  = nodeDesc("mqmesh_nats_clients", "NATS client connections.")
	mTrDrop   = nodeDesc("mqmesh_trace_events_dropped_total", "Trace events not recorded (buffer full or per-task cap).")
	mUp       = nodeDesc("mqmesh_node_up", "1 while the node serves.")
	mByTier   = nodeDesc("mqmesh_leases_total", "Leases of this node's tasks since it started, by where the worker was (local, idc, other, unknown).", "tier")
)

func nodeDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var nodeDescs = []*prometheus.Desc{mReady, mLeased, mDelayed, mDead, mOldest, mEnq, mAcked, mNacked, mLeaseExp,
	mDeadL, mDeferred, mKept, mKeptBytes, mThrActive, mThrLimit, mThrHeld, mBudget, mNodeUsage, mMeshUsage, mShare, mConstrained,
	mLSM, mVlog, mFree, mDiskSize, mLeases, mRoutes, mGateways, mClients, mTrDrop, mUp, mByTier}

// nodeCollector reads a node at scrape time.
type nodeCollector struct{ n *Node }

// Collector returns the node's Prometheus collector. It works before Start
// and after Stop (reporting mqmesh_node_up 0). Register it wrapped with the
// node's labels:
//
//	prometheus.WrapRegistererWith(prometheus.Labels{"idc": idc, "node": name}, reg).MustRegister(n.Collector())
func (n *Node) Collector() prometheus.Collector { return nodeCollector{n} }

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append(nodeDescs, replDescs...) {
		ch <- d
	}
	// The histograms' descriptions do not depend on a store being open.
	o := &observer{}
	o.initMetrics()
	for _, col := range o.collectors() {
		col.Describe(ch)
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	n.mu.Lock()
	st, ns, stopped := n.st, n.ns, n.stopped
	n.mu.Unlock()
	if st == nil || stopped {
		ch <- prometheus.MustNewConstMetric(mUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(mUp, prometheus.GaugeValue, 1)
	for _, col := range st.obs.collectors() {
		col.Collect(ch)
	}
	collectRepl(n, ch) // replmetrics.go
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	for _, s := range st.allStats() {
		name := s.Queue
		gauge(mReady, float64(s.Ready), name)
		gauge(mLeased, float64(s.Leased), name)
		gauge(mDelayed, float64(s.Delayed), name)
		gauge(mDead, float64(s.Dead), name)
		gauge(mOldest, float64(s.OldestReadyAgeMs)/1000, name)
		counter(mEnq, s.EnqueuedTotal, name)
		counter(mAcked, s.AckedTotal, name)
		counter(mNacked, s.NackedTotal, name)
		counter(mLeaseExp, s.ExpiredLeasesTotal, name)
		counter(mDeadL, s.DeadTotal, name)
		counter(mDeferred, s.RetriesDeferredTotal, name)
		gauge(mKept, float64(s.SettledKept), name)
		gauge(mKeptBytes, float64(s.SettledBytes), name)
		for _, t := range s.Throttles {
			throttleMetrics(ch, name, t.Kind, t.Backend, t.Active, t.Limit, t.DeferredTotal)
		}
	}
	for _, t := range throttleStates(st.th.NodeStates()) {
		throttleMetrics(ch, "", t.Kind, t.Backend, t.Active, t.Limit, t.DeferredTotal)
	}
	for _, b := range backendStats(st.th.Backends()) {
		gauge(mBudget, b.Budget, b.Backend)
		gauge(mNodeUsage, b.NodeUsage, b.Backend)
		gauge(mMeshUsage, b.MeshUsage, b.Backend)
		gauge(mShare, b.Share, b.Backend)
		gauge(mConstrained, b2f(b.Constrained), b.Backend)
	}
	lsm, vlog := st.db.Size()
	gauge(mLSM, float64(lsm))
	gauge(mVlog, float64(vlog))
	if u, err := disk.Usage(n.cfg.DataDir); err == nil {
		gauge(mFree, float64(u.Free))
		gauge(mDiskSize, float64(u.Total))
	}
	gauge(mLeases, float64(st.leases.count()))
	counter(mTrDrop, st.obs.tr.dropped.Load())
	for i, tier := range [4]string{"unknown", "local", "idc", "other"} {
		counter(mByTier, st.obs.leaseTiers[i].Load(), tier)
	}
	if ns != nil {
		gauge(mRoutes, float64(ns.NumRoutes()))
		gauge(mClients, float64(ns.NumClients()))
		if gz, err := ns.Gatewayz(&server.GatewayzOptions{}); err == nil {
			gauge(mGateways, float64(len(gz.OutboundGateways)), "outbound")
			gauge(mGateways, float64(len(gz.InboundGateways)), "inbound")
		}
	}
}

func throttleMetrics(ch chan<- prometheus.Metric, queue, kind, backend string, active bool, limit float64, held uint64) {
	ch <- prometheus.MustNewConstMetric(mThrActive, prometheus.GaugeValue, b2f(active), queue, kind, backend)
	ch <- prometheus.MustNewConstMetric(mThrLimit, prometheus.GaugeValue, limit, queue, kind, backend)
	ch <- prometheus.MustNewConstMetric(mThrHeld, prometheus.CounterValue, float64(held), queue, kind, backend)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
