package mqnode

import (
	"errors"
	"fmt"

	"github.com/shirou/gopsutil/v4/disk"
)

// CheckStore is nil while the node's store is open and serving.
func (n *Node) CheckStore() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.stopped:
		return errors.New("node stopped")
	case n.st == nil:
		return errors.New("store not open (node not started)")
	case n.st.db.IsClosed():
		return errors.New("store closed")
	}
	return nil
}

// CheckNATS is nil while the embedded NATS server accepts connections and
// the node's own connection to it is up.
func (n *Node) CheckNATS() error {
	n.mu.Lock()
	ns, nc := n.ns, n.nc
	n.mu.Unlock()
	switch {
	case ns == nil || !ns.Running():
		return errors.New("nats server not running")
	case nc == nil || !nc.IsConnected():
		return errors.New("node's nats connection is down")
	}
	return nil
}

// CheckDisk is nil unless the disk is full: the store is under its
// reserve (Config.DiskReserve: enqueues answer DISK_FULL), or the data
// directory's file system has less than minFree bytes free.
func (n *Node) CheckDisk(minFree uint64) error {
	n.mu.Lock()
	st := n.st
	n.mu.Unlock()
	if st != nil && st.disk != nil && st.disk.full.Load() {
		return fmt.Errorf("disk full: %d bytes free on %s, under the store's reserve of %d; enqueues answer DISK_FULL",
			max(st.disk.free.Load(), 0), n.cfg.DataDir, st.disk.reserve.Load())
	}
	u, err := disk.Usage(n.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("disk usage of %s: %w", n.cfg.DataDir, err)
	}
	if u.Free < minFree {
		return fmt.Errorf("disk full: %d bytes free on %s, need %d", u.Free, n.cfg.DataDir, minFree)
	}
	return nil
}
