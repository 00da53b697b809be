package mesh

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mesh/meshpb"
)

// Role of a member.
type Role string

const (
	RoleNode   Role = "node"
	RoleWorker Role = "worker"
)

// State of a member as this member sees it.
type State string

const (
	StateAlive   State = "alive"
	StateSuspect State = "suspect"
	StateFailed  State = "failed" // detected dead: no graceful leave
	StateLeft    State = "left"   // announced its leave
)

// Meta is what a member gossips about itself.
type Meta struct {
	Role Role   `json:"role"`
	IDC  string `json:"idc"`
	Host string `json:"host"`
	// Name is the node name (role node) or the worker id (role worker): the
	// id a worker pulls with, so a node can release its leases.
	Name string `json:"name"`
	// Node is, for a worker, the node of its own host ("" = worker-only).
	Node string `json:"node,omitempty"`
	// NATS addresses (nodes): client URL, cluster (route) URL, gateway URL.
	NATSClient  string `json:"nats_client,omitempty"`
	NATSCluster string `json:"nats_cluster,omitempty"`
	NATSGateway string `json:"nats_gateway,omitempty"`
	Version     string `json:"version,omitempty"`
	Leaving     bool   `json:"leaving,omitempty"`
	// Buddy replication of a node (agent_repl.go): its buddy (idc.name),
	// state and lag in records, gossiped when they change (the lag at
	// most every ReplMetaInterval).
	Buddy     string `json:"buddy,omitempty"`
	ReplState string `json:"repl_state,omitempty"`
	ReplLag   uint64 `json:"repl_lag,omitempty"`
}

// memberID is the memberlist name of a member: unique per role, IDC, name.
func (m Meta) memberID() string { return string(m.Role) + ":" + m.IDC + ":" + m.Name }

func (m Meta) toPB() *meshpb.Meta {
	return &meshpb.Meta{
		Role: roleToPB(m.Role), Idc: m.IDC, Host: m.Host, Name: m.Name, Node: m.Node,
		NatsClient: m.NATSClient, NatsCluster: m.NATSCluster, NatsGateway: m.NATSGateway,
		Version: m.Version, Leaving: m.Leaving, Buddy: m.Buddy, ReplState: m.ReplState, ReplLag: m.ReplLag,
	}
}

func (m Meta) encode() ([]byte, error) {
	b, err := proto.Marshal(m.toPB())
	if err != nil {
		return nil, err
	}
	if len(b) > 512 {
		return nil, fmt.Errorf("mesh: member metadata is %d bytes, memberlist allows 512", len(b))
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	var pb meshpb.Meta
	if err := proto.Unmarshal(b, &pb); err != nil {
		return Meta{}, fmt.Errorf("mesh: bad member metadata: %w", err)
	}
	return metaFromPB(&pb), nil
}

func metaFromPB(pb *meshpb.Meta) Meta {
	m := Meta{
		IDC: pb.GetIdc(), Host: pb.GetHost(), Name: pb.GetName(), Node: pb.GetNode(),
		NATSClient: pb.GetNatsClient(), NATSCluster: pb.GetNatsCluster(), NATSGateway: pb.GetNatsGateway(),
		Version: pb.GetVersion(), Leaving: pb.GetLeaving(),
		Buddy: pb.GetBuddy(), ReplState: pb.GetReplState(), ReplLag: pb.GetReplLag(),
	}
	switch pb.GetRole() {
	case meshpb.Role_NODE:
		m.Role = RoleNode
	case meshpb.Role_WORKER:
		m.Role = RoleWorker
	}
	return m
}

func roleToPB(r Role) meshpb.Role {
	switch r {
	case RoleNode:
		return meshpb.Role_NODE
	case RoleWorker:
		return meshpb.Role_WORKER
	}
	return meshpb.Role_ROLE_UNKNOWN
}

var stateToPB = map[State]meshpb.State{
	StateAlive: meshpb.State_ALIVE, StateSuspect: meshpb.State_SUSPECT,
	StateFailed: meshpb.State_FAILED, StateLeft: meshpb.State_LEFT,
}

func trimLog(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "] "); i >= 0 && i < 40 {
		return s[i+2:]
	}
	return s
}
