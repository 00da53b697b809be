package mesh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mesh/meshpb"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// ErrNotMember is returned by FetchMembers for a node that is not a mesh
// member (a standalone node).
var ErrNotMember = errors.New("mesh: not a mesh member")

// FetchMembers asks node name in idc, over nc, for the membership as it
// sees it.
func FetchMembers(ctx context.Context, nc *nats.Conn, idc, name string) (*meshpb.MembersReply, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	body, _ := proto.Marshal(&meshpb.MembersRequest{})
	m, err := nc.RequestWithContext(ctx, mqnode.Subject(idc, name, OpMembers), body)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("%w: node %s/%s does not answer", mqnode.ErrUnavailable, idc, name)
		}
		return nil, fmt.Errorf("%w: members of %s/%s: %w", mqnode.ErrUnavailable, idc, name, err)
	}
	// A node without the mesh answers UNKNOWN_OP in an mqnode reply.
	var nodeRep wirepb.InfoReply
	if proto.Unmarshal(m.Data, &nodeRep) == nil && nodeRep.GetError().GetCode() == wirepb.Code_UNKNOWN_OP {
		return nil, fmt.Errorf("%w: node %s/%s runs standalone", ErrNotMember, idc, name)
	}
	var rep meshpb.MembersReply
	if err := proto.Unmarshal(m.Data, &rep); err != nil {
		return nil, fmt.Errorf("mesh: undecodable members reply: %w", err)
	}
	if rep.Error != "" {
		return nil, fmt.Errorf("mesh: members: %s", rep.Error)
	}
	if len(rep.Members) == 0 && rep.Self == "" {
		return nil, fmt.Errorf("%w: node %s/%s", ErrNotMember, idc, name)
	}
	return &rep, nil
}
