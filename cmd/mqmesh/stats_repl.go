package main

import (
	"fmt"
	"io"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// replJSON is the node's buddy replication in `mqmesh stats --json`.
type replJSON struct {
	Enabled bool   `json:"enabled"`
	Mode    string `json:"mode"`  // node default: sync or async
	Buddy   string `json:"buddy"` // idc.name; "" = none
	// State: off, no-buddy, connecting, reconciling, copying, replicated,
	// down, fenced.
	State           string `json:"state"`
	Epoch           uint64 `json:"epoch"`
	PartitionPolicy string `json:"partition_policy"`
	// LagRecords: written locally, not yet confirmed by the buddy.
	LagRecords     int64   `json:"lag_records"`
	ShippedRecords uint64  `json:"shipped_records"`
	Batches        uint64  `json:"batches"`
	BatchRTTMs     float64 `json:"batch_rtt_ms"`
	LastAckAgeMs   int64   `json:"last_ack_age_ms"` // -1: never
	// CopyDone/CopyTotal: re-replication progress (records).
	CopyDone  int64 `json:"copy_done"`
	CopyTotal int64 `json:"copy_total"`
	// UnreplicatedAcks: replicated enqueues acknowledged without the buddy;
	// FailedEnqueues: refused for want of it.
	UnreplicatedAcks uint64     `json:"unreplicated_acks"`
	FailedEnqueues   uint64     `json:"failed_enqueues"`
	Takeovers        uint64     `json:"takeovers"`
	Alarm            string     `json:"alarm,omitempty"`
	Held             []heldJSON `json:"held"` // primaries this node is the buddy of
}

type heldJSON struct {
	Primary   string `json:"primary"`
	State     string `json:"state"` // standby, taken-over, none
	Epoch     uint64 `json:"epoch"`
	Records   int64  `json:"records"`
	CopyDone  bool   `json:"copy_done"`
	TakenOver uint64 `json:"taken_over"`
}

func newReplJSON(st *wirepb.ReplStatus) *replJSON {
	if st == nil {
		return nil
	}
	out := &replJSON{Enabled: st.Enabled, Mode: st.Mode, Buddy: st.Buddy, State: st.State, Epoch: st.Epoch,
		PartitionPolicy: st.PartitionPolicy, LagRecords: st.LagRecords, ShippedRecords: st.AckedRecords,
		Batches: st.Batches, BatchRTTMs: st.BatchRttMs, LastAckAgeMs: st.LastAckAgeMs, CopyDone: st.CopyDone,
		CopyTotal: st.CopyTotal, UnreplicatedAcks: st.UnreplicatedAcks, FailedEnqueues: st.FailedEnqueues,
		Takeovers: st.Takeovers, Alarm: st.Alarm, Held: []heldJSON{}}
	for _, h := range st.Held {
		out.Held = append(out.Held, heldJSON{Primary: h.Primary, State: h.State, Epoch: h.Epoch, Records: h.Records,
			CopyDone: h.CopyDone, TakenOver: h.TakenOver})
	}
	return out
}

// writeRepl prints the replication lines of `mqmesh stats` (nothing when
// the node neither replicates nor holds a copy).
func writeRepl(w io.Writer, r *replJSON) error {
	if r == nil || (!r.Enabled && len(r.Held) == 0) {
		return nil
	}
	fmt.Fprintln(w)
	if r.Enabled {
		buddy := r.Buddy
		if buddy == "" {
			buddy = "-"
		}
		fmt.Fprintf(w, "replication: %s to %s, state %s, epoch %d, lag %d records, %d shipped in %d batches (last rtt %.1f ms), partition policy %s\n",
			r.Mode, buddy, r.State, r.Epoch, r.LagRecords, r.ShippedRecords, r.Batches, r.BatchRTTMs, r.PartitionPolicy)
		if r.State == "copying" {
			fmt.Fprintf(w, "replication: copying current tasks to the buddy: %d of %d records\n", r.CopyDone, r.CopyTotal)
		}
		if r.UnreplicatedAcks+r.FailedEnqueues > 0 {
			fmt.Fprintf(w, "replication: %d enqueues acknowledged without the buddy, %d refused for want of it\n", r.UnreplicatedAcks, r.FailedEnqueues)
		}
		if r.Alarm != "" {
			fmt.Fprintf(w, "replication ALARM: %s\n", r.Alarm)
		}
	}
	if len(r.Held) == 0 {
		return nil
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "BUDDY OF\tSTATE\tEPOCH\tRECORDS\tCOPY\tTAKEN OVER")
	for _, h := range r.Held {
		copyState := "partial"
		if h.CopyDone {
			copyState = "complete"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\n", h.Primary, h.State, h.Epoch, h.Records, copyState, h.TakenOver)
	}
	return tw.Flush()
}
