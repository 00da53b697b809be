package mqnode

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// Durability says when an enqueue is acknowledged.
type Durability string

const (
	// DurabilityFsync acknowledges after the write is fsynced. Concurrent
	// enqueues share one group-committed fsync. Survives power loss.
	DurabilityFsync Durability = "fsync"
	// DurabilityAsync acknowledges after the write reached the OS (Badger's
	// memory-mapped write-ahead log). Survives a kill -9 of the process, not a
	// power cut or kernel crash.
	DurabilityAsync Durability = "async"
)

// Defaults of Config and QueueConfig, beside the settings they govern.
const (
	DefaultIDC             = "local"
	DefaultDataDir         = "./data"
	DefaultListen          = "127.0.0.1:4222"
	DefaultMaxPayload      = 1 << 20
	DefaultLease           = 30 * time.Second
	DefaultMaxLease        = 12 * time.Hour
	DefaultMaxPullWait     = 60 * time.Second
	DefaultMaxDelay        = 366 * 24 * time.Hour
	DefaultMaxTTL          = 10 * 366 * 24 * time.Hour
	DefaultMaxPullBatch    = 1000
	DefaultMaxEnqueueBatch = 10000
	DefaultReadyBuffer     = 1024
	DefaultReadyBufferSize = 8 << 20
	DefaultReadyBudget     = 128 << 20
	DefaultGCInterval      = time.Minute
	DefaultMemTableSize    = 16 << 20
	DefaultBlockCacheSize  = 32 << 20
	DefaultIndexCacheSize  = 16 << 20
	DefaultNATSMaxPayload  = 1<<20 + 64<<10
	DefaultValueThreshold  = 128
	DefaultValueLogFile    = 64 << 20

	DefaultMaxPullsPerClient = 1024
	DefaultMaxRequestRate    = 20000
	DefaultMaxQueues         = 10000
	DefaultQueueIdleEvict    = time.Hour

	DefaultMaxAttempts = 10
	DefaultBackoffBase = time.Second
	DefaultBackoffMax  = 5 * time.Minute
	DefaultRetention   = 7 * 24 * time.Hour
	DefaultDedupWindow = 10 * time.Minute
)

// ListenNone as Config.Listen starts the node without a TCP listener: only
// in-process clients can reach it.
const ListenNone = "none"

// Config configures a Node. The zero value of every field means its default
// (see WithDefaults); Validate names the first bad field.
type Config struct {
	// Name of this node, unique in its IDC; a subject token. Default: the
	// host name with invalid characters replaced by '-'.
	Name string `yaml:"name"`
	// IDC (data centre) of this node; a subject token. Default "local".
	IDC string `yaml:"idc"`
	// DataDir holds the Badger store. Default "./data".
	DataDir string `yaml:"data"`
	// Listen is the NATS client address (host:port; port 0 picks one).
	// "none" disables TCP: in-process clients only. Default 127.0.0.1:4222.
	Listen string `yaml:"listen"`
	// Durability of enqueues: fsync (default) or async.
	Durability Durability `yaml:"durability"`
	// MaxPayload is the largest task payload accepted, in bytes. Default 1 MiB.
	MaxPayload int `yaml:"max_payload"`
	// NATSMaxPayload is the embedded NATS server's max message size: the
	// largest batch request. Default 1 MiB + 64 KiB (one max-size task and
	// its headers); must exceed MaxPayload, and one request must fit one
	// Badger transaction: MemTableSize >= 14 × this.
	NATSMaxPayload int `yaml:"nats_max_payload"`
	// AutoCreateQueues lets an enqueue or pull create a queue on first use.
	// When false only the queues listed in Queues exist. Default true.
	AutoCreateQueues *bool `yaml:"auto_create_queues"`
	// QueueDefaults apply to every queue; Queues overrides them per queue.
	QueueDefaults QueueConfig            `yaml:"queue_defaults"`
	Queues        map[string]QueueConfig `yaml:"queues"`
	// DefaultLease is the lease (visibility timeout) of a pull that names
	// none. Default 30s. MaxLease caps any lease or extension. Default 12h.
	DefaultLease time.Duration `yaml:"default_lease"`
	MaxLease     time.Duration `yaml:"max_lease"`
	// MaxPullWait caps a pull's long-poll wait. Default 60s.
	MaxPullWait time.Duration `yaml:"max_pull_wait"`
	// MaxDelay bounds a task's delay, its not-before time (from now) and a
	// nack's retry delay; MaxTTL bounds a task's ttl. Larger values are
	// refused with BAD_REQUEST. Defaults 366 days and 10 × 366 days.
	MaxDelay time.Duration `yaml:"max_delay"`
	MaxTTL   time.Duration `yaml:"max_ttl"`
	// MaxPullBatch caps the tasks one pull returns. Default 1000.
	MaxPullBatch int `yaml:"max_pull_batch"`
	// MaxEnqueueBatch caps the tasks one enqueue request carries. Default 10000.
	MaxEnqueueBatch int `yaml:"max_enqueue_batch"`
	// MaxPullsPerClient caps the pulls one client connection has in flight
	// (long polls hold a slot while they wait). Default 1024.
	MaxPullsPerClient int `yaml:"max_pulls_per_client"`
	// MaxRequestRate caps one client connection's requests per second
	// (token bucket, burst one second's worth); past it requests get
	// UNAVAILABLE. Negative: no limit. Default 20000.
	MaxRequestRate float64 `yaml:"max_request_rate"`
	// MaxQueues caps the queues a node holds: past it an enqueue or pull
	// of an unknown queue gets UNAVAILABLE instead of creating it.
	// Default 10000.
	MaxQueues int `yaml:"max_queues"`
	// QueueIdleEvict removes an auto-created queue that has held no task,
	// lease, dead letter or waiting pull for this long. Negative: never.
	// Default 1h.
	QueueIdleEvict time.Duration `yaml:"queue_idle_evict"`
	// ReadyBuffer and ReadyBufferBytes bound the in-memory window of ready
	// tasks per queue; the rest of the backlog stays on disk and is paged in
	// by cursor. Defaults 1024 tasks and 8 MiB.
	ReadyBuffer      int `yaml:"ready_buffer"`
	ReadyBufferBytes int `yaml:"ready_buffer_bytes"`
	// ReadyBudget bounds the ready windows of all queues together, in
	// bytes: a queue refills only into what is left of it, or its fair share
	// (budget / queues), and always at least one task. Default 128 MiB.
	ReadyBudget int64 `yaml:"ready_budget"`
	// GCInterval is how often Badger's value-log GC runs. Default 1m.
	GCInterval time.Duration `yaml:"gc_interval"`
	// Badger memory: memtable size (at most 2 in memory), block cache,
	// index cache. Defaults 16 MiB, 32 MiB, 16 MiB — fixed sizes, so RSS
	// stays flat as the backlog grows (Badger's table builders, pooled,
	// grow with the memtable: a small memtable keeps them small).
	MemTableSize int64 `yaml:"memtable_size"`
	// ValueThreshold: stored records at least this large (most tasks: the
	// record holds the payload) go to Badger's value log, and the LSM tree
	// holds only their keys and pointers, so it stays small as the backlog
	// grows; value-log GC reclaims acked tasks. Default 128 bytes.
	ValueThreshold int64 `yaml:"value_threshold"`
	// ValueLogFileSize is the size of one value-log file, the unit that
	// value-log GC rewrites. Default 64 MiB.
	ValueLogFileSize int64 `yaml:"value_log_file_size"`
	BlockCacheSize   int64 `yaml:"block_cache_size"`
	IndexCacheSize   int64 `yaml:"index_cache_size"`
	// DiskReserve is the free space (bytes) kept on the data dir's
	// filesystem for what Badger maps next and for settling work: below it,
	// enqueues answer DISK_FULL while pulls, acks and DLQ purges go on (see
	// diskspace.go). Default 2 × (2 × memtable_size + 2 × value_log_file_size)
	// (320 MiB at the default sizes); at least half that.
	DiskReserve int64 `yaml:"disk_reserve"`

	// Throttle is the node's overload protection: retry admission by
	// success rate, dispatch by host CPU, mesh-wide backend budgets. On by
	// default; see package throttle for every setting and its default.
	Throttle throttle.Config `yaml:"throttle"`
	// Topics defined on this node: topic name → subscriptions (topic.go).
	// Topics made with `mqmesh topic create` live in the store instead and
	// reach every node of the mesh.
	Topics map[string][]Subscription `yaml:"topics"`
	// TopicSyncInterval is how often the node republishes its stored
	// topics to the mesh (topicsync.go). Default 30s.
	TopicSyncInterval time.Duration `yaml:"topic_sync_interval"`
	// CPUSampler reads the host's CPU usage for the CPU throttle. Default
	// throttle.HostCPU(); tests inject their own.
	CPUSampler throttle.CPUSampler `yaml:"-"`
	// Host names the host the node runs on in its info reply, so the pools
	// of the host can name it the same way. The mesh agent sets it to the
	// host of the membership. Default: empty.
	Host string `yaml:"-"`
	// StarvationSampler reads the node's own CPU starvation for the CPU
	// throttle (cpu.signal starvation). Default throttle.ProcessStarvation().
	StarvationSampler throttle.StarvationSampler `yaml:"-"`

	// Replicas is the node default of QueueConfig.Replicas: 1 copies every
	// queue's writes to a buddy node (replicate.go), 0 (default) does not.
	Replicas int `yaml:"replicas"`
	// Replication is the node default of QueueConfig.Replication: sync
	// (default) or async.
	Replication ReplicationMode `yaml:"replication"`
	// Buddy configures the buddy choice, takeover, the sync partition
	// policy, async lag and re-replication (see BuddyConfig).
	Buddy BuddyConfig `yaml:"buddy"`

	// Trace bounds the task trace kept in the store (see TraceConfig).
	Trace TraceConfig `yaml:"trace"`
	// Security, when set, secures the node (see package internal/secrets):
	// TLS and nkey users with role permissions on the client port; the
	// node's own connections authenticate as role node. Nil: no TLS, no
	// authentication — for loopback only (the CLI refuses a non-loopback
	// listener without it).
	Security *secrets.Set `yaml:"-"`

	// Logger receives the node's logs. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
	// now overrides the clock in tests.
	now func() time.Time
}

// QueueConfig holds per-queue settings. Zero fields inherit the node's
// QueueDefaults, whose zero fields take the package defaults.
type QueueConfig struct {
	// MaxAttempts is how many deliveries a task gets before it goes to the
	// dead letter queue. Default 10.
	MaxAttempts uint32 `yaml:"max_attempts"`
	// BackoffBase and BackoffMax shape the retry delay after a nack:
	// base * 2^(attempt-1), capped at max, with ±20% jitter. Defaults 1s, 5m.
	BackoffBase time.Duration `yaml:"backoff_base"`
	BackoffMax  time.Duration `yaml:"backoff_max"`
	// Retention is how long a task may wait to be consumed before it is
	// moved to the dead letter queue as expired. Default 7 days; negative
	// means forever.
	Retention time.Duration `yaml:"retention"`
	// DedupWindow is how long a producer dedup key is remembered. Default 10m.
	DedupWindow time.Duration `yaml:"dedup_window"`
	// KeepSettled keeps acked and dead-lettered tasks this long (whole
	// seconds) after they are settled, for `mqmesh replay`. Default 0: off
	// (negative switches a default off for one queue).
	KeepSettled time.Duration `yaml:"keep_settled"`
	// Replicas: 1 copies the queue's writes (puts, acks, dead letters,
	// DLQ changes) to the node's buddy; -1 switches a node default of 1
	// off for this queue; 0 inherits. Default: Config.Replicas.
	Replicas int `yaml:"replicas,omitempty"`
	// Replication is sync or async (see ReplicationMode). Default:
	// Config.Replication.
	Replication ReplicationMode `yaml:"replication,omitempty"`
}

func (q QueueConfig) merge(over QueueConfig) QueueConfig {
	if over.MaxAttempts != 0 {
		q.MaxAttempts = over.MaxAttempts
	}
	if over.BackoffBase != 0 {
		q.BackoffBase = over.BackoffBase
	}
	if over.BackoffMax != 0 {
		q.BackoffMax = over.BackoffMax
	}
	if over.Retention != 0 {
		q.Retention = over.Retention
	}
	if over.DedupWindow != 0 {
		q.DedupWindow = over.DedupWindow
	}
	if over.KeepSettled != 0 {
		q.KeepSettled = over.KeepSettled
	}
	if over.Replicas != 0 {
		q.Replicas = over.Replicas
	}
	if over.Replication != "" {
		q.Replication = over.Replication
	}
	return q
}

var packageQueueDefaults = QueueConfig{
	MaxAttempts: DefaultMaxAttempts,
	BackoffBase: DefaultBackoffBase,
	BackoffMax:  DefaultBackoffMax,
	Retention:   DefaultRetention,
	DedupWindow: DefaultDedupWindow,
}

// DefaultName is the node name used when none is configured: the host name
// made into a valid subject token.
func DefaultName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "node"
	}
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	s := strings.TrimLeft(string(b), "_")
	if len(s) > subject.MaxTokenLen {
		s = s[:subject.MaxTokenLen]
	}
	if s == "" {
		return "node"
	}
	return s
}

// WithDefaults returns a copy of c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	setDefault(&c.Name, DefaultName())
	setDefault(&c.IDC, DefaultIDC)
	setDefault(&c.DataDir, DefaultDataDir)
	setDefault(&c.Listen, DefaultListen)
	setDefault(&c.Durability, DurabilityFsync)
	setDefault(&c.MaxPayload, DefaultMaxPayload)
	setDefault(&c.NATSMaxPayload, DefaultNATSMaxPayload)
	if c.AutoCreateQueues == nil {
		t := true
		c.AutoCreateQueues = &t
	}
	setDefault(&c.Replication, ReplicationSync)
	c.QueueDefaults = packageQueueDefaults.merge(c.QueueDefaults)
	c.Buddy = c.Buddy.WithDefaults(c.IDC)
	setDefault(&c.DefaultLease, DefaultLease)
	setDefault(&c.MaxLease, DefaultMaxLease)
	setDefault(&c.MaxPullWait, DefaultMaxPullWait)
	setDefault(&c.MaxDelay, DefaultMaxDelay)
	setDefault(&c.MaxTTL, DefaultMaxTTL)
	setDefault(&c.MaxPullBatch, DefaultMaxPullBatch)
	setDefault(&c.MaxEnqueueBatch, DefaultMaxEnqueueBatch)
	setDefault(&c.MaxPullsPerClient, DefaultMaxPullsPerClient)
	setDefault(&c.MaxRequestRate, DefaultMaxRequestRate)
	setDefault(&c.MaxQueues, DefaultMaxQueues)
	setDefault(&c.QueueIdleEvict, DefaultQueueIdleEvict)
	setDefault(&c.ReadyBuffer, DefaultReadyBuffer)
	setDefault(&c.ReadyBufferBytes, DefaultReadyBufferSize)
	setDefault(&c.ReadyBudget, DefaultReadyBudget)
	setDefault(&c.GCInterval, DefaultGCInterval)
	setDefault(&c.MemTableSize, DefaultMemTableSize)
	setDefault(&c.BlockCacheSize, DefaultBlockCacheSize)
	setDefault(&c.IndexCacheSize, DefaultIndexCacheSize)
	setDefault(&c.ValueThreshold, DefaultValueThreshold)
	setDefault(&c.ValueLogFileSize, DefaultValueLogFile)
	setDefault(&c.DiskReserve, 2*c.minDiskReserve())
	setDefault(&c.TopicSyncInterval, DefaultTopicSyncInterval)
	c.Throttle = c.Throttle.WithDefaults()
	c.Trace = c.Trace.WithDefaults()
	if c.CPUSampler == nil {
		c.CPUSampler = throttle.HostCPU()
	}
	if c.StarvationSampler == nil {
		c.StarvationSampler = throttle.ProcessStarvation()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Validate checks a defaulted config and names the first bad field.
func (c Config) Validate() error {
	var errs []error
	if err := subject.Validate("name", c.Name); err != nil {
		errs = append(errs, err)
	}
	if err := subject.Validate("idc", c.IDC); err != nil {
		errs = append(errs, err)
	}
	if c.Durability != DurabilityFsync && c.Durability != DurabilityAsync {
		errs = append(errs, fmt.Errorf("durability %q: want fsync or async", c.Durability))
	}
	if c.MaxPayload < 0 {
		errs = append(errs, fmt.Errorf("max_payload %d: must be positive", c.MaxPayload))
	}
	if c.NATSMaxPayload < c.MaxPayload+4096 {
		errs = append(errs, fmt.Errorf("nats_max_payload %d: must exceed max_payload (%d) by at least 4096", c.NATSMaxPayload, c.MaxPayload))
	}
	if c.ValueThreshold < 64 || c.ValueThreshold > 1<<20 || c.ValueLogFileSize < 1<<20 || c.ValueLogFileSize >= 2<<30 {
		errs = append(errs, fmt.Errorf("value_threshold %d / value_log_file_size %d: want 64 B..1 MiB and 1 MiB..2 GiB", c.ValueThreshold, c.ValueLogFileSize))
	}
	if c.MemTableSize < 14*int64(c.NATSMaxPayload) {
		errs = append(errs, fmt.Errorf("memtable_size %d: must be at least 14 × nats_max_payload (%d) so one request fits one transaction", c.MemTableSize, c.NATSMaxPayload))
	}
	if c.DefaultLease <= 0 || c.MaxLease < c.DefaultLease {
		errs = append(errs, fmt.Errorf("default_lease %s / max_lease %s: need 0 < default_lease <= max_lease", c.DefaultLease, c.MaxLease))
	}
	if c.MaxDelay <= 0 || c.MaxTTL <= 0 {
		errs = append(errs, fmt.Errorf("max_delay %s / max_ttl %s: must be positive", c.MaxDelay, c.MaxTTL))
	}
	if c.MaxPullWait < 0 || c.MaxPullBatch <= 0 || c.MaxEnqueueBatch <= 0 || c.ReadyBuffer <= 0 || c.ReadyBufferBytes <= 0 || c.ReadyBudget <= 0 {
		errs = append(errs, errors.New("max_pull_wait, max_pull_batch, max_enqueue_batch, ready_buffer, ready_buffer_bytes, ready_budget: must be positive"))
	}
	if c.MaxPullsPerClient <= 0 || c.MaxQueues <= 0 {
		errs = append(errs, fmt.Errorf("max_pulls_per_client %d / max_queues %d: must be positive", c.MaxPullsPerClient, c.MaxQueues))
	}
	if c.QueueIdleEvict > 0 && c.QueueIdleEvict <= c.MaxPullWait {
		errs = append(errs, fmt.Errorf("queue_idle_evict %s: must exceed max_pull_wait (%s), or be negative (never)", c.QueueIdleEvict, c.MaxPullWait))
	}
	if c.GCInterval < 0 || c.MemTableSize < 1<<20 || c.BlockCacheSize < 0 || c.IndexCacheSize < 0 {
		errs = append(errs, errors.New("gc_interval, memtable_size (>= 1 MiB), block_cache_size, index_cache_size: out of range"))
	}
	if c.DiskReserve < c.minDiskReserve() {
		errs = append(errs, fmt.Errorf("disk_reserve %d: must be at least 2 × memtable_size + 2 × value_log_file_size = %d (the next files Badger maps)", c.DiskReserve, c.minDiskReserve()))
	}
	if c.Security != nil {
		if err := c.Security.CheckNode(); err != nil {
			errs = append(errs, fmt.Errorf("security: %w", err))
		}
	}
	if err := c.Throttle.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Trace.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := validateTopics(c.Topics); err != nil {
		errs = append(errs, err)
	}
	if c.TopicSyncInterval <= 0 {
		errs = append(errs, fmt.Errorf("topic_sync_interval %s: must be positive", c.TopicSyncInterval))
	}
	if c.Replicas < 0 || c.Replicas > 1 {
		errs = append(errs, fmt.Errorf("replicas %d: want 0 or 1", c.Replicas))
	}
	if c.Replication != ReplicationSync && c.Replication != ReplicationAsync {
		errs = append(errs, fmt.Errorf("replication %q: want sync or async", c.Replication))
	}
	if err := c.Buddy.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.QueueDefaults.validate("queue_defaults"); err != nil {
		errs = append(errs, err)
	}
	for name, q := range c.Queues {
		if err := subject.Validate("queues key", name); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := c.QueueDefaults.merge(q).validate("queues." + name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (q QueueConfig) validate(field string) error {
	if q.MaxAttempts == 0 || q.BackoffBase <= 0 || q.BackoffMax < q.BackoffBase || q.DedupWindow <= 0 {
		return fmt.Errorf("%s: need max_attempts >= 1, 0 < backoff_base <= backoff_max, dedup_window > 0", field)
	}
	if q.KeepSettled > 0 && q.KeepSettled < time.Second {
		return fmt.Errorf("%s.keep_settled %s: want at least 1s (or 0: off)", field, q.KeepSettled)
	}
	return q.validateReplication(field)
}

// queueConfig returns the effective settings of a queue.
func (c *Config) queueConfig(name string) QueueConfig {
	return QueueConfig{Replicas: c.Replicas, Replication: c.Replication}.merge(c.QueueDefaults).merge(c.Queues[name])
}

// minDiskReserve is the space the next memtable and value-log files Badger
// creates take (each is made at twice its nominal size).
func (c Config) minDiskReserve() int64 { return 2*c.MemTableSize + 2*c.ValueLogFileSize }
