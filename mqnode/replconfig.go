package mqnode

import (
	"errors"
	"fmt"
	"time"

	"github.com/mqmesh/mqmesh/internal/subject"
)

// ReplicationMode says when an enqueue to a replicated queue is
// acknowledged (see replicate.go).
type ReplicationMode string

const (
	// ReplicationSync acknowledges an enqueue only once the buddy holds the
	// write durably too (under the buddy's own Durability). Concurrent
	// enqueues share one round trip and one group commit on each side.
	ReplicationSync ReplicationMode = "sync"
	// ReplicationAsync acknowledges after the local commit and ships the
	// write in the background; the lag is bounded by BuddyConfig.MaxLag.
	ReplicationAsync ReplicationMode = "async"
)

// PartitionPolicy is what a sync enqueue does while the buddy cannot be
// reached (no buddy chosen, buddy unreachable, or this node fenced).
type PartitionPolicy string

const (
	// PartitionBlock holds the enqueue until the buddy confirms it, up to
	// BuddyConfig.SyncTimeout; then the enqueue fails with UNAVAILABLE (the
	// task is stored locally and will run: a producer retry makes a
	// duplicate, never a loss).
	PartitionBlock PartitionPolicy = "block"
	// PartitionFail fails the enqueue with UNAVAILABLE at once while the
	// node has no working replication session.
	PartitionFail PartitionPolicy = "fail"
	// PartitionLocal acknowledges after the local commit, as if the queue
	// were not replicated, and raises the alarm (stats, metric, log) until
	// the buddy is back and the copy has caught up.
	PartitionLocal PartitionPolicy = "local"
)

// LagPolicy is what an async enqueue does while the unshipped writes exceed
// BuddyConfig.MaxLag.
type LagPolicy string

const (
	// LagBlock holds enqueues (as if sync) until the lag is under MaxLag
	// again: the lag stays bounded.
	LagBlock LagPolicy = "block"
	// LagAlarm acknowledges anyway and raises the alarm.
	LagAlarm LagPolicy = "alarm"
)

// Defaults of BuddyConfig.
const (
	DefaultTakeoverAfter   = 30 * time.Second
	DefaultSyncTimeout     = 5 * time.Second
	DefaultMaxLag          = 10000
	DefaultCopyRate        = 20000
	DefaultMaxBatchRecords = 4096
)

// BuddyConfig configures replication between this node and its buddy: the
// node it copies its replicated queues' writes to, and the nodes it is the
// buddy of. Which queues are replicated is Config.Replicas / QueueConfig.
type BuddyConfig struct {
	// IDC is where the buddy is chosen: alive nodes of this IDC on another
	// host. Default: the node's own IDC.
	IDC string `yaml:"idc"`
	// TakeoverAfter is how long gossip must report a primary failed (or
	// absent) before its buddy takes over its tasks. Default 30s.
	TakeoverAfter time.Duration `yaml:"takeover_after"`
	// PartitionPolicy is what a sync enqueue does while the buddy cannot be
	// reached: block (default), fail, or local (see PartitionPolicy).
	PartitionPolicy PartitionPolicy `yaml:"partition_policy"`
	// SyncTimeout is the longest a sync enqueue waits for its buddy (policy
	// block) before failing with UNAVAILABLE; also the timeout of one
	// shipping round trip. Default 5s.
	SyncTimeout time.Duration `yaml:"sync_timeout"`
	// MaxLag bounds the records written locally and not yet confirmed by
	// the buddy in async mode. Default 10000.
	MaxLag int64 `yaml:"max_lag"`
	// LagPolicy is what async enqueues do past MaxLag: block (default) or
	// alarm.
	LagPolicy LagPolicy `yaml:"lag_policy"`
	// CopyRate bounds re-replication (copying the current tasks to a new
	// buddy), in records per second. Default 20000.
	CopyRate int `yaml:"copy_rate"`
	// MaxBatchRecords caps the records of one shipping request (the bytes
	// are capped by nats_max_payload). Default 4096.
	MaxBatchRecords int `yaml:"max_batch_records"`
	// ReconcileWait is how long a restarted primary waits for its previous
	// buddy to answer before it serves without reconciling (alarm: tasks
	// the buddy took over may then run twice). Default: TakeoverAfter.
	ReconcileWait time.Duration `yaml:"reconcile_wait"`
}

// WithDefaults fills the zero fields; idc is the node's own IDC.
func (b BuddyConfig) WithDefaults(idc string) BuddyConfig {
	setDefault(&b.IDC, idc)
	setDefault(&b.TakeoverAfter, DefaultTakeoverAfter)
	setDefault(&b.PartitionPolicy, PartitionBlock)
	setDefault(&b.SyncTimeout, DefaultSyncTimeout)
	setDefault(&b.MaxLag, DefaultMaxLag)
	setDefault(&b.LagPolicy, LagBlock)
	setDefault(&b.CopyRate, DefaultCopyRate)
	setDefault(&b.MaxBatchRecords, DefaultMaxBatchRecords)
	setDefault(&b.ReconcileWait, b.TakeoverAfter)
	return b
}

// Validate checks a defaulted BuddyConfig.
func (b BuddyConfig) Validate() error {
	var errs []error
	if err := subject.Validate("buddy.idc", b.IDC); err != nil {
		errs = append(errs, err)
	}
	switch b.PartitionPolicy {
	case PartitionBlock, PartitionFail, PartitionLocal:
	default:
		errs = append(errs, fmt.Errorf("buddy.partition_policy %q: want block, fail or local", b.PartitionPolicy))
	}
	switch b.LagPolicy {
	case LagBlock, LagAlarm:
	default:
		errs = append(errs, fmt.Errorf("buddy.lag_policy %q: want block or alarm", b.LagPolicy))
	}
	if b.TakeoverAfter <= 0 || b.SyncTimeout <= 0 || b.ReconcileWait <= 0 {
		errs = append(errs, errors.New("buddy.takeover_after, sync_timeout, reconcile_wait: must be positive"))
	}
	if b.MaxLag <= 0 || b.CopyRate <= 0 || b.MaxBatchRecords <= 0 {
		errs = append(errs, errors.New("buddy.max_lag, copy_rate, max_batch_records: must be positive"))
	}
	return errors.Join(errs...)
}

// validateReplication checks the replication fields of a queue config
// (merged over the node's).
func (q QueueConfig) validateReplication(field string) error {
	if q.Replicas < -1 || q.Replicas > 1 {
		return fmt.Errorf("%s.replicas %d: want 0 or 1 (-1 switches the node default off for a queue)", field, q.Replicas)
	}
	switch q.Replication {
	case "", ReplicationSync, ReplicationAsync:
	default:
		return fmt.Errorf("%s.replication %q: want sync or async", field, q.Replication)
	}
	return nil
}

// replicated reports whether a queue's writes are copied to the buddy.
func (q QueueConfig) replicated() bool { return q.Replicas > 0 }

// anyReplicated reports whether some queue of the node may be replicated:
// the node default is on, or a configured queue switches it on. Auto-created
// queues take the node default.
func (c *Config) anyReplicated() bool {
	if c.queueConfig("").replicated() {
		return true
	}
	for name := range c.Queues {
		if c.queueConfig(name).replicated() {
			return true
		}
	}
	return false
}
