package mesh

import (
	"time"

	"github.com/mqmesh/mqmesh/mqnode"
)

// ReplMetaInterval is how often a node agent looks at its node's
// replication state and gossips a change (buddy, state, lag).
const ReplMetaInterval = 2 * time.Second

// feedPeers tells the node which nodes gossip reports, for its buddy
// choice and takeover (mqnode.Node.SetPeers). A member that is failed,
// left, or leaving is down.
func (a *NodeAgent) feedPeers() {
	var peers []mqnode.Peer
	for _, mb := range a.Mesh.Members() {
		if mb.Meta.Role != RoleNode {
			continue
		}
		alive := (mb.State == StateAlive || mb.State == StateSuspect) && !mb.Meta.Leaving
		peers = append(peers, mqnode.Peer{IDC: mb.Meta.IDC, Name: mb.Meta.Name, Host: mb.Meta.Host, Alive: alive})
	}
	a.Node.SetPeers(peers)
}

// gossipRepl keeps the member metadata's buddy, replication state and lag
// current, so `mqmesh mesh members` shows who is whose buddy.
func (a *NodeAgent) gossipRepl() {
	defer a.wg.Done()
	t := time.NewTicker(ReplMetaInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		a.feedPeers() // also catches members whose events were dropped
		st := a.Node.Replication()
		self := a.Mesh.Self()
		lag := uint64(max(st.LagRecords, 0))
		if st.State == mqnode.ReplOff && self.ReplState == "" {
			continue
		}
		if self.Buddy == st.Buddy && self.ReplState == st.State && self.ReplLag == lag {
			continue
		}
		if err := a.Mesh.UpdateMeta(func(m *Meta) {
			m.Buddy, m.ReplState, m.ReplLag = st.Buddy, st.State, lag
		}); err != nil {
			a.log.Warn("gossip replication state", "err", err)
		}
	}
}
