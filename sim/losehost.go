package sim

import (
	"fmt"
	"os"
)

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
