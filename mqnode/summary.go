package mqnode

import (
	"context"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mqnode/opspb"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// OpSummary answers the operations summary (opspb.SummaryReply) that
// `mqmesh top` and the dashboard ask every node for.
const OpSummary = "ops"

// Lease tiers: where the worker of a lease was, as the mesh told the node.
const (
	tierUnknown = iota
	tierLocal
	tierIDC
	tierOther
)

var tierIndex = map[string]int{"local": tierLocal, "idc": tierIDC, "other": tierOther}

func (s *service) summary(_ context.Context, b []byte) proto.Message {
	cfg := s.n.cfg
	rep := &opspb.SummaryReply{Idc: cfg.IDC, Node: cfg.Name}
	var req opspb.SummaryRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		rep.Error = "bad request: " + err.Error()
		return rep
	}
	lt := &s.n.st.obs.leaseTiers
	rep.LeasesUnknown, rep.LeasesLocal = lt[tierUnknown].Load(), lt[tierLocal].Load()
	rep.LeasesIdc, rep.LeasesOther = lt[tierIDC].Load(), lt[tierOther].Load()
	names := s.n.st.queueNames()
	slices.Sort(names)
	for _, q := range names {
		ql := &opspb.QueueLatency{Queue: q}
		ql.Bounds, ql.ScheduleToStart = buckets(s.n.st.obs.scheduleToStart, q)
		_, ql.EnqueueToDone = buckets(s.n.st.obs.enqueueToDone, q)
		rep.Latency = append(rep.Latency, ql)
	}
	return rep
}

// buckets reads the cumulative bucket counts of one queue's histogram,
// then its total count.
func buckets(h *prometheus.HistogramVec, queue string) (bounds []float64, counts []uint64) {
	o, err := h.GetMetricWithLabelValues(queue)
	if err != nil {
		return nil, nil
	}
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil || m.Histogram == nil {
		return nil, nil
	}
	for _, b := range m.Histogram.Bucket {
		bounds = append(bounds, b.GetUpperBound())
		counts = append(counts, b.GetCumulativeCount())
	}
	return bounds, append(counts, m.Histogram.GetSampleCount())
}

// Summary asks the client's node for its operations summary.
func (c *Client) Summary(ctx context.Context) (*opspb.SummaryReply, error) {
	var rep opspb.SummaryReply
	if err := c.call(ctx, c.subj(OpSummary), &opspb.SummaryRequest{}, &rep, func() *wirepb.Error { return nil }); err != nil {
		return nil, err
	}
	if rep.Error != "" {
		return nil, fmt.Errorf("%w: %s", ErrBadRequest, rep.Error)
	}
	return &rep, nil
}
