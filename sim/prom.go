package sim

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The operator's view of a run: at the end of each mode the simulator
// gathers the very collectors `mqmesh node --http` and `mqmesh worker
// --http` export (package mqnode, worker, mesh, backlog) from every live
// node and pool, and sums each series over them, so the report speaks the
// metric names an operator's Prometheus would show. Counters count since
// each process (node or pool) last started: a node or pool restarted
// during the run counts only its last life.

// operatorSeries are the series the report keeps, summed over the mesh,
// keyed by name and the label that matters ("name" or "name{label=value}").
var operatorSeries = map[string]string{
	"mqmesh_queue_enqueued_total":            "",
	"mqmesh_queue_acked_total":               "",
	"mqmesh_queue_nacked_total":              "",
	"mqmesh_queue_lease_expired_total":       "",
	"mqmesh_queue_dead_lettered_total":       "",
	"mqmesh_queue_retries_deferred_total":    "",
	"mqmesh_queue_ready_tasks":               "",
	"mqmesh_queue_dead_tasks":                "",
	"mqmesh_leases_total":                    "tier",
	"mqmesh_backlog_notices_sent_total":      "tier",
	"mqmesh_worker_pulls_total":              "tier",
	"mqmesh_worker_empty_pulls_total":        "tier",
	"mqmesh_worker_tasks_processed_total":    "tier",
	"mqmesh_backlog_notices_received_total":  "tier",
	"mqmesh_enqueue_to_done_seconds":         "", // histogram: the sample count
	"mqmesh_worker_handler_duration_seconds": "",
}

// operatorView gathers the run's live nodes and pools.
func (r *run) operatorView() map[string]float64 {
	reg := prometheus.NewPedanticRegistry()
	for _, h := range r.hosts {
		h.mu.Lock()
		agent, pool := h.agent, h.pool
		h.mu.Unlock()
		if agent != nil && h.nodeUp.Load() {
			wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"idc": h.idc, "node": h.name}, reg)
			for _, c := range agent.Collectors() {
				_ = wrapped.Register(c)
			}
		}
		if pool != nil && h.poolUp.Load() {
			c := pool.Config()
			_ = prometheus.WrapRegistererWith(prometheus.Labels{"idc": c.IDC, "host": c.Host, "pool": c.ID}, reg).Register(pool.Collector())
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		r.log.Warn("operator metrics not gathered", "err", err)
	}
	out := map[string]float64{}
	for _, mf := range fams {
		by, ok := operatorSeries[mf.GetName()]
		if !ok {
			continue
		}
		for _, m := range mf.Metric {
			key := mf.GetName()
			if by != "" {
				i := slices.IndexFunc(m.Label, func(l *dto.LabelPair) bool { return l.GetName() == by })
				if i < 0 {
					continue
				}
				key += "{" + by + "=" + m.Label[i].GetValue() + "}"
			}
			out[key] += value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}
