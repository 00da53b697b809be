package mqnode

import "github.com/prometheus/client_golang/prometheus"

// Replication metrics (replicate.go), read from Node.Replication at scrape.
var (
	mReplState   = nodeDesc("mqmesh_repl_state", "Replication state of this node as a primary: 1 for the current state.", "state")
	mReplLag     = nodeDesc("mqmesh_repl_lag_records", "Records written locally and not yet confirmed by the buddy.")
	mReplShipped = nodeDesc("mqmesh_repl_shipped_records_total", "Records confirmed by the buddy since start.")
	mReplBatches = nodeDesc("mqmesh_repl_batches_total", "Replication batches confirmed by the buddy since start.")
	mReplUnrepl  = nodeDesc("mqmesh_repl_unreplicated_acks_total", "Replicated enqueues acknowledged without the buddy (partition_policy local, lag_policy alarm).")
	mReplFailed  = nodeDesc("mqmesh_repl_failed_enqueues_total", "Replicated enqueues refused for want of the buddy (UNAVAILABLE, FENCED).")
	mReplCopy    = nodeDesc("mqmesh_repl_copy_records", "Re-replication progress: records copied and to copy.", "kind")
	mReplTakes   = nodeDesc("mqmesh_repl_takeovers_total", "Takeovers of failed primaries by this node since start.")
	mReplHeld    = nodeDesc("mqmesh_repl_held_records", "Standby records this node holds for a primary.", "primary", "state")
	mReplRTT     = nodeDesc("mqmesh_repl_batch_rtt_seconds", "Round trip of the last replication batch.")
	mReplAlarm   = nodeDesc("mqmesh_repl_alarm", "1 while replication raises an alarm (see stats).")
)

var replDescs = []*prometheus.Desc{mReplState, mReplLag, mReplShipped, mReplBatches, mReplUnrepl, mReplFailed,
	mReplCopy, mReplTakes, mReplHeld, mReplRTT, mReplAlarm}

var replStates = []string{ReplOff, ReplNoBuddy, ReplConnecting, ReplReconciling, ReplCopying, ReplReplicated, ReplDown, ReplFenced}

func collectRepl(n *Node, ch chan<- prometheus.Metric) {
	st := n.Replication()
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	for _, s := range replStates {
		gauge(mReplState, b2f(st.State == s), s)
	}
	gauge(mReplLag, float64(st.LagRecords))
	counter(mReplShipped, st.AckedRecords)
	counter(mReplBatches, st.Batches)
	counter(mReplUnrepl, st.UnreplicatedAcks)
	counter(mReplFailed, st.FailedEnqueues)
	gauge(mReplCopy, float64(st.CopyDone), "done")
	gauge(mReplCopy, float64(st.CopyTotal), "total")
	counter(mReplTakes, st.Takeovers)
	gauge(mReplRTT, st.BatchRttMs/1000)
	gauge(mReplAlarm, b2f(st.Alarm != ""))
	for _, h := range st.Held {
		gauge(mReplHeld, float64(h.Records), h.Primary, h.State)
	}
}
