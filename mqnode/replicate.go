package mqnode

import (
	"context"
	"fmt"
	"time"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Buddy replication (opt-in, per queue).
//
// A node whose queues have replicas: 1 is a primary: it picks a buddy
// (buddy.go: rendezvous hashing over the alive nodes of the preferred IDC
// on another host, kept while it stays alive) and streams to it every
// committed write of its replicated queues — task puts and deletes (enqueue,
// ack, nack, lease expiry moves), dead letters, DLQ requeues and purges,
// dedup keys — as ReplRecords of the primary's own keys, in commit order
// (replship.go). The writer calls out once per committed group
// (store.repl.committed); nothing else in the write path knows about
// replication.
//
// Every node is also a buddy for whoever picks it (replserve.go): it keeps
// a primary's records under its own key prefix (r|len|primary|key), apart
// from its own tasks, in its own Badger, through its own group-committed
// writer, and answers a batch only once it is durable under its own
// Durability.
//
// Sessions and epochs: a primary opens a session with hello (what does the
// buddy hold of me, at which epoch?) and begin (a new epoch, one more than
// any seen: the buddy drops older copies), then ships batches numbered
// from 1 within the epoch, one in flight at a time, each carrying
// everything committed meanwhile (group commit across the wire: concurrent
// enqueues share one round trip). A new session starts with a full copy of
// the current tasks at BuddyConfig.CopyRate (re-replication, replcopy.go);
// the state is "copying" until its last batch is confirmed, "replicated"
// after. A batch from an epoch that is not the buddy's current one is
// refused with FENCED.
//
// Takeover (repltakeover.go): when gossip has reported a primary failed or
// absent for TakeoverAfter, its buddy bumps the primary's epoch (fencing
// it), then imports the standby records as tasks of its own queues of the
// same names (new keys, same task ids, same records), remembering which
// keys of the primary it took. From then on they are ordinary tasks of the
// buddy: pulled, acked, broadcast as the buddy's backlog.
//
// Return (replreconcile.go): a primary that starts, or finds itself
// fenced, holds every pull (serves nothing) until it has asked its last
// buddy. If the buddy took over, the primary deletes exactly the keys the
// buddy took (tasks completed during the takeover disappear with them;
// tasks still pending stay with the buddy and run there: they are not
// handed back), tells the buddy to forget them, and starts a new epoch.
// Tasks the primary held that the buddy never had (async lag, or sync
// writes never confirmed) stay with the primary. When the last buddy does
// not answer within ReconcileWait, the primary serves anyway and raises the
// alarm (tasks the buddy took may run twice: duplicates, not loss).
//
// Sync partition policy (BuddyConfig.PartitionPolicy) applies while the
// primary has no working session: block (wait up to SyncTimeout, then
// UNAVAILABLE), fail (UNAVAILABLE at once), local (acknowledge locally,
// alarm, counted in UnreplicatedAcks). An enqueue that fails this way was
// stored locally and will run; the producer's retry makes a duplicate.
//
// # Starting a replicated pair
//
// With the mesh (mesh.NodeAgent, `mqmesh node`), set replicas: 1 in the
// node config: gossip supplies the peers and the NATS routes. Without it
// (tests, benchmarks), StartGroup starts nodes joined by NATS routes and
// tells each about the others (Node.SetPeers); Node.WaitReplicated waits
// until the first copy is confirmed.

// Peer is a node of the mesh as gossip reports it, for the buddy choice and
// takeover (Node.SetPeers).
type Peer struct {
	IDC, Name, Host string
	// Alive: gossip reports the member alive (or suspect). A peer that is
	// failed, left, or missing from the list is down.
	Alive bool
}

// ID is idc.name.
func (p Peer) ID() string { return p.IDC + "." + p.Name }

// Replication states (wirepb.ReplStatus.State).
const (
	ReplOff         = "off"         // no queue of the node is replicated
	ReplNoBuddy     = "no-buddy"    // no alive node to be the buddy
	ReplConnecting  = "connecting"  // opening a session with the buddy
	ReplReconciling = "reconciling" // restarted or fenced: asking the last buddy first
	ReplCopying     = "copying"     // session open, current tasks being copied
	ReplReplicated  = "replicated"  // copy confirmed, writes streaming
	ReplDown        = "down"        // the buddy stopped answering
	ReplFenced      = "fenced"      // the buddy took over; reconciling
)

// SetPeers tells the node which nodes the mesh has (the mesh agent calls
// it on every membership change; tests call it directly). It drives the
// buddy choice and takeover. Safe to call at any time after New.
func (n *Node) SetPeers(peers []Peer) {
	n.repl().setPeers(peers)
}

// Replication returns the node's replication state (also in its stats
// reply and metrics).
func (n *Node) Replication() *wirepb.ReplStatus {
	return n.repl().status()
}

// WaitReplicated waits until the node's replication state is "replicated"
// (the copy to its buddy is confirmed) or ctx ends.
func (n *Node) WaitReplicated(ctx context.Context) error {
	for {
		st := n.Replication()
		if st.State == ReplReplicated {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mqnode: not replicated (state %s, alarm %q): %w", st.State, st.Alarm, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// repl returns the node's replicator (made at New).
func (n *Node) repl() *replicator { return n.rp }
