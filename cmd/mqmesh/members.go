package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mesh/meshpb"
)

// errNotMeshMember is returned by `mqmesh mesh members` for a node that
// runs standalone.
var errNotMeshMember = errors.New("not a mesh member")

// membersOptions are the flags of `mqmesh mesh members`.
type membersOptions struct {
	clientOptions
}

// membersJSON is the stable --json output of `mqmesh mesh members`.
type membersJSON struct {
	// Self is the member id (role:idc:name) of the node that answered.
	Self string `json:"self"`
	// Ready is false while that node is cut off from its mesh: it sees no
	// other alive member but knows members it should reach (it retries in
	// the background); NotReady says why.
	Ready    bool   `json:"ready"`
	NotReady string `json:"not_ready,omitempty"`
	// Members are every member that node knows, itself included, sorted
	// by IDC, role and name. Failed and left members stay listed for the
	// node's retain period (1h by default).
	Members []memberJSON `json:"members"`
}

// memberJSON is one member as the answering node sees it.
type memberJSON struct {
	ID   string `json:"id"`   // role:idc:name
	Role string `json:"role"` // node or worker
	IDC  string `json:"idc"`
	Host string `json:"host"`
	// Name is the node name, or the worker id.
	Name string `json:"name"`
	// Node is, for a worker, the node of its host ("" for a node, and for a
	// worker-only host).
	Node string `json:"node"`
	// State is alive, suspect, failed (detected dead) or left (announced
	// its leave).
	State string    `json:"state"`
	Since time.Time `json:"since"` // last state change
	// GossipAddr is the member's gossip address host:port.
	GossipAddr string `json:"gossip_addr"`
	// NATS addresses of a node: client, route and gateway URLs.
	NATSClient  string `json:"nats_client"`
	NATSCluster string `json:"nats_cluster"`
	NATSGateway string `json:"nats_gateway"`
	Version     string `json:"version"`
	// Buddy replication of a node: its buddy (idc.name), replication
	// state and lag in records, as last gossiped (every few seconds).
	Buddy     string `json:"buddy,omitempty"`
	ReplState string `json:"repl_state,omitempty"`
	ReplLag   uint64 `json:"repl_lag,omitempty"`
}

func newMeshCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mesh",
		Short: "Inspect the mesh a node belongs to",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newMembersCommand())
	return cmd
}

func newMembersCommand() *cobra.Command {
	o := &membersOptions{}
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the mesh members as one node sees them",
		Long: `List the members of the mesh as the node at --server sees them: role,
IDC, host, name, state (alive, suspect, failed, left), when the state last
changed, the NATS client URL and the gossip address. A standalone node (one
not started as a mesh member) is an error.`,
		Example: `  mqmesh mesh members
  mqmesh mesh members --server nats://127.0.1.1:4222 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	o.bind(cmd.Flags())
	return cmd
}

func (o *membersOptions) run(ctx context.Context, stdout io.Writer) error {
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	idc, name := c.Node()
	rctx, cancel := o.request(ctx)
	defer cancel()
	rep, err := mesh.FetchMembers(rctx, c.Conn(), idc, name)
	if err != nil {
		if errors.Is(err, mesh.ErrNotMember) {
			return fmt.Errorf("node %s/%s at %s: %w (it runs standalone)", idc, name, o.Server, errNotMeshMember)
		}
		return fmt.Errorf("mesh members: %w", err)
	}
	out := newMembersJSON(rep)
	if o.JSON {
		return writeJSON(stdout, out)
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "ROLE\tIDC\tHOST\tNAME\tSTATE\tSINCE\tNATS\tGOSSIP\tREPLICA(BUDDY/STATE/LAG)")
	for _, m := range out.Members {
		repl := "-"
		if m.ReplState != "" {
			repl = fmt.Sprintf("%s/%s/%d", dash(m.Buddy), m.ReplState, m.ReplLag)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Role, m.IDC, dash(m.Host), m.Name, m.State,
			formatTime(m.Since), dash(m.NATSClient), m.GossipAddr, repl)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !out.Ready {
		fmt.Fprintf(stdout, "NOT READY: %s: %s\n", out.Self, out.NotReady)
	}
	return nil
}

func newMembersJSON(rep *meshpb.MembersReply) membersJSON {
	out := membersJSON{Self: rep.GetSelf(), Ready: rep.GetReady(), NotReady: rep.GetNotReady(), Members: make([]memberJSON, 0, len(rep.GetMembers()))}
	for _, m := range rep.GetMembers() {
		meta := m.GetMeta()
		out.Members = append(out.Members, memberJSON{
			ID: m.GetId(), Role: roleName(meta.GetRole()), IDC: meta.GetIdc(), Host: meta.GetHost(),
			Name: meta.GetName(), Node: meta.GetNode(), State: stateName(m.GetState()),
			Since: unixMsTime(m.GetSinceUnixMs()), GossipAddr: m.GetGossipAddr(),
			NATSClient: meta.GetNatsClient(), NATSCluster: meta.GetNatsCluster(), NATSGateway: meta.GetNatsGateway(),
			Version: meta.GetVersion(), Buddy: meta.GetBuddy(), ReplState: meta.GetReplState(), ReplLag: meta.GetReplLag(),
		})
	}
	return out
}

func roleName(r meshpb.Role) string {
	switch r {
	case meshpb.Role_NODE:
		return string(mesh.RoleNode)
	case meshpb.Role_WORKER:
		return string(mesh.RoleWorker)
	}
	return "unknown"
}

func stateName(s meshpb.State) string {
	switch s {
	case meshpb.State_ALIVE:
		return string(mesh.StateAlive)
	case meshpb.State_SUSPECT:
		return string(mesh.StateSuspect)
	case meshpb.State_FAILED:
		return string(mesh.StateFailed)
	case meshpb.State_LEFT:
		return string(mesh.StateLeft)
	}
	return "unknown"
}

// dash prints "" as "-" in a table.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
