package sim

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// simBuddy is the replication of the replicated mode: the buddy takes a
// failed primary's tasks over 2 s after gossip reported it failed (the
// simulator's runs last seconds; a deployment waits longer, 30 s by
// default), and a sync enqueue waits at most 2 s for its buddy.
var simBuddy = mqnode.BuddyConfig{TakeoverAfter: 2 * time.Second, SyncTimeout: 2 * time.Second}

// replicasOf is every node's replicas in a mode: 1 (sync, the default
// replication) in the replicated mode, else 0.
func replicasOf(mode string) int {
	if mode == ModeReplicated {
		return 1
	}
	return 0
}

// loseHost plays lose-host: the host dies for good (its node and pool stop
// abruptly, as kill-node) and its disk goes with it: the node's data
// directory is deleted and the host is not started again, not even by
// restore-all. Without replication every task on that disk is lost; with
// a buddy (the replicated mode) the buddy's copy takes over.
func (r *run) loseHost(h *simHost) error {
	h.removed.Store(true) // no producer, no restart
	r.stopPool(h, false)
	r.stopNode(h, false)
	if err := os.RemoveAll(h.dataDir); err != nil {
		return fmt.Errorf("lose-host %s: wipe its disk: %w", h.name, err)
	}
	r.metrics.wipe(h.name)
	return nil
}

// wipe records that a host's disk is gone: what it held is not stranded
// (waiting for the host to return) but lost, unless another node holds it.
func (m *metrics) wipe(host string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.wiped == nil {
		m.wiped = map[string]bool{}
	}
	m.wiped[host] = true
}

// awaitingTakeover is the standby records a node holds for primaries whose
// node is down: tasks that wait for the takeover, part of the backlog (the
// drain is not over before they run). A takeover imports them as the
// node's own tasks and leaves none held.
func (r *run) awaitingTakeover(rep *wirepb.StatsReply) uint64 {
	var n uint64
	for _, held := range rep.GetReplication().GetHeld() {
		_, name, _ := strings.Cut(held.GetPrimary(), ".") // idc.name
		if h := r.host(name); h != nil && !h.nodeUp.Load() {
			n += uint64(max(held.GetRecords(), 0))
		}
	}
	return n
}
