package mqnode

import (
	"context"
	"fmt"

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
	return rep
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
