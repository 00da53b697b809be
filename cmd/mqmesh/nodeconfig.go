package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// fileConfig is a node config file: the keys of mqnode.Config at the top
// level, and an optional mesh section that makes the node a mesh member.
type fileConfig struct {
	mqnode.Config `yaml:",inline"`
	// Mesh is nil when the file has no mesh section (a standalone node).
	Mesh *meshConfig `yaml:"mesh,omitempty"`
	// SecuritySection is the security section (--secrets, --insecure).
	SecuritySection securitySection `yaml:"security,omitempty"`
}

// securitySection is the security section of a node config file.
type securitySection struct {
	// Secrets is the secrets directory (see 'mqmesh secrets init'):
	// TLS and authentication on every link. Default $MQMESH_SECRETS.
	Secrets string `yaml:"secrets,omitempty"`
	// Insecure lets a node listen beyond loopback without secrets.
	Insecure bool `yaml:"insecure,omitempty"`
}

// loadConfig reads a node config file strictly: an unknown key is an error
// naming the key and its line, and durations need a unit ("30s").
func loadConfig(path string) (fileConfig, error) {
	var cfg fileConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for i, e := range te.Errors {
				te.Errors[i] = strings.ReplaceAll(e, "in type main.meshSection", "in the mesh section")
			}
		}
		if strings.Contains(err.Error(), "into time.Duration") {
			err = fmt.Errorf("%w\n  (a duration is a number with a unit: 500ms, 30s, 10m, 12h)", err)
		}
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config %s: want one YAML document, found more", path)
	}
	return cfg, nil
}

// bindConfigFlags registers a flag for every key of mqnode.Config, bound to
// c's fields. The flag of a key is its YAML name with '-' for '_'; the keys
// of queue_defaults drop the prefix (--max-attempts), and --queue declares
// entries of queues. Registering leaves c unchanged.
func bindConfigFlags(fs *pflag.FlagSet, c *mqnode.Config) {
	fs.StringVar(&c.Name, "name", c.Name, "node name, unique in its IDC; a subject token (the default is the host name)")
	fs.StringVar(&c.IDC, "idc", c.IDC, "IDC (data centre) of the node; a subject token")
	fs.StringVar(&c.DataDir, "data", c.DataDir, "directory of the node's Badger store")
	fs.StringVar(&c.Listen, "listen", c.Listen, `NATS client address host:port (port 0 picks one; "none": in-process clients only)`)
	fs.Var(durabilityValue{&c.Durability}, "durability", "when an enqueue is acknowledged: fsync (survives power loss) or async (survives kill -9)")
	fs.IntVar(&c.MaxPayload, "max-payload", c.MaxPayload, "largest task payload accepted, in bytes")
	fs.IntVar(&c.NATSMaxPayload, "nats-max-payload", c.NATSMaxPayload, "largest NATS message (one batch request), in bytes")
	fs.VarPF(boolPtrValue{&c.AutoCreateQueues}, "auto-create-queues", "", "create a queue on its first enqueue or pull; when false only declared queues exist").NoOptDefVal = "true"
	fs.Var(queueNamesValue{&c.Queues}, "queue", "declare a queue with the default settings (repeatable; per-queue settings only in the config file)")
	fs.DurationVar(&c.DefaultLease, "default-lease", c.DefaultLease, "lease (visibility timeout) of a pull that names none")
	fs.DurationVar(&c.MaxLease, "max-lease", c.MaxLease, "longest lease or extension")
	fs.DurationVar(&c.MaxPullWait, "max-pull-wait", c.MaxPullWait, "longest long-poll wait of a pull")
	fs.DurationVar(&c.MaxDelay, "max-delay", c.MaxDelay, "longest task delay, not-before (from now) or nack delay accepted")
	fs.DurationVar(&c.MaxTTL, "max-ttl", c.MaxTTL, "longest task ttl accepted")
	fs.IntVar(&c.MaxPullBatch, "max-pull-batch", c.MaxPullBatch, "most tasks one pull returns")
	fs.IntVar(&c.MaxEnqueueBatch, "max-enqueue-batch", c.MaxEnqueueBatch, "most tasks one enqueue request carries")
	fs.IntVar(&c.MaxPullsPerClient, "max-pulls-per-client", c.MaxPullsPerClient, "most pulls one client connection has in flight (long polls included)")
	fs.Float64Var(&c.MaxRequestRate, "max-request-rate", c.MaxRequestRate, "most requests per second from one client connection (negative: no limit)")
	fs.IntVar(&c.MaxQueues, "max-queues", c.MaxQueues, "most queues the node holds; past it an unknown queue is not created")
	fs.DurationVar(&c.QueueIdleEvict, "queue-idle-evict", c.QueueIdleEvict, "remove an auto-created queue empty and unused this long (negative: never)")
	fs.IntVar(&c.ReadyBuffer, "ready-buffer", c.ReadyBuffer, "ready tasks kept in memory per queue (the rest is paged from disk)")
	fs.IntVar(&c.ReadyBufferBytes, "ready-buffer-bytes", c.ReadyBufferBytes, "bytes of ready tasks kept in memory per queue")
	fs.Int64Var(&c.ReadyBudget, "ready-budget", c.ReadyBudget, "bytes of ready tasks kept in memory by all queues together")
	fs.DurationVar(&c.GCInterval, "gc-interval", c.GCInterval, "interval of Badger's value-log GC")
	fs.Int64Var(&c.MemTableSize, "memtable-size", c.MemTableSize, "Badger memtable size, in bytes")
	fs.Int64Var(&c.BlockCacheSize, "block-cache-size", c.BlockCacheSize, "Badger block cache size, in bytes")
	fs.Int64Var(&c.IndexCacheSize, "index-cache-size", c.IndexCacheSize, "Badger index cache size, in bytes")
	fs.Int64Var(&c.ValueThreshold, "value-threshold", c.ValueThreshold, "records at least this large go to Badger's value log (bytes)")
	fs.Int64Var(&c.ValueLogFileSize, "value-log-file-size", c.ValueLogFileSize, "size of one value-log file, the unit of value-log GC (bytes)")
	fs.DurationVar(&c.PageOutInterval, "pageout-interval", c.PageOutInterval, "how often the kernel is asked to reclaim the pages of Badger's mapped files (zero or negative: never, the default)")
	fs.Int64Var(&c.DiskReserve, "disk-reserve", c.DiskReserve, "free disk space kept; below it enqueues answer DISK_FULL (bytes)")
	fs.IntVar(&c.Replicas, "replicas", c.Replicas, "1: copy every queue's writes to a buddy node chosen by gossip (buddy replication); 0: off")
	fs.StringVar((*string)(&c.Replication), "replication", string(c.Replication), "replicated queues: sync (acknowledged once the buddy has the write) or async")
	fs.StringVar(&c.Buddy.IDC, "buddy-idc", c.Buddy.IDC, "IDC the buddy is chosen in (default: the node's own); the rest of buddy.* by file")
	fs.DurationVar(&c.Buddy.TakeoverAfter, "takeover-after", c.Buddy.TakeoverAfter, "the buddy takes over a node's tasks after gossip reported it down this long")
	fs.StringVar((*string)(&c.Buddy.PartitionPolicy), "partition-policy", string(c.Buddy.PartitionPolicy), "sync enqueue while the buddy is unreachable: block, fail or local (acknowledge locally, alarm)")
	q := &c.QueueDefaults
	fs.Uint32Var(&q.MaxAttempts, "max-attempts", q.MaxAttempts, "queue default: deliveries before a task goes to the dead letter queue")
	fs.DurationVar(&q.BackoffBase, "backoff-base", q.BackoffBase, "queue default: first retry delay after a nack (doubles per attempt)")
	fs.DurationVar(&q.BackoffMax, "backoff-max", q.BackoffMax, "queue default: longest retry delay")
	fs.DurationVar(&q.Retention, "retention", q.Retention, "queue default: how long a task may wait before it is dead-lettered as expired (negative: forever)")
	fs.DurationVar(&q.DedupWindow, "dedup-window", q.DedupWindow, "queue default: how long a producer dedup key is remembered")
	fs.DurationVar(&q.KeepSettled, "keep-settled", q.KeepSettled, "queue default: keep acked and dead-lettered tasks this long for `mqmesh replay` (0: off)")
	fs.Var(topicsValue{&c.Topics}, "topic", "topic on this node: NAME=QUEUE[:HEADER=VALUE],... (repeatable; topics)")
	fs.DurationVar(&c.TopicSyncInterval, "topic-sync-interval", c.TopicSyncInterval, "how often the node republishes its stored topics to the mesh")
	th := &c.Throttle
	fs.BoolVar(&th.Disabled, "no-throttle", th.Disabled, "switch overload protection off (throttle.disabled; other throttle settings only in the config file)")
	fs.Float64Var(&th.CPU.Ceiling, "cpu-ceiling", th.CPU.Ceiling, "host CPU usage (0..1) above which the node slows its dispatch (throttle.cpu.ceiling)")
	fs.Var(budgetsValue{&th.Backends}, "backend-budget", "mesh-wide budget of a backend, NAME=CALLS_PER_S (repeatable or comma-separated; throttle.backends)")
	fs.BoolVar(&c.Trace.Disabled, "no-trace", c.Trace.Disabled, "record no task trace (trace.disabled)")
	fs.DurationVar(&c.Trace.Retention, "trace-retention", c.Trace.Retention, "how long task trace events are kept (trace.retention; other trace settings only in the config file)")
	fs.Float64Var(&c.Trace.Sample, "trace-sample", c.Trace.Sample, "share of tasks traced in full even when they succeed, in (0, 1]; a task that fails is traced from its first failure on whatever the share (trace.sample)")
}

// budgetsValue is the --backend-budget flag: NAME=CALLS_PER_S pairs.
type budgetsValue struct {
	m *map[string]throttle.BackendConfig
}

func (v budgetsValue) Type() string { return "name=calls/s" }
func (v budgetsValue) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(*v.m)) {
		parts = append(parts, fmt.Sprintf("%s=%g", k, (*v.m)[k].Budget))
	}
	return strings.Join(parts, ",")
}
func (v budgetsValue) Set(s string) error {
	for _, pair := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok {
			return fmt.Errorf("%q: want NAME=CALLS_PER_S", pair)
		}
		if err := subject.Validate("backend", name); err != nil {
			return err
		}
		b, err := strconv.ParseFloat(val, 64)
		if err != nil || b <= 0 {
			return fmt.Errorf("%q: budget must be a positive number of calls/s", pair)
		}
		if *v.m == nil {
			*v.m = map[string]throttle.BackendConfig{}
		}
		(*v.m)[name] = throttle.BackendConfig{Budget: b}
	}
	return nil
}

// applyConfigFlags copies onto c the config flags that were set on fs
// (Changed), so a flag overrides the file only when given.
func applyConfigFlags(fs *pflag.FlagSet, c *mqnode.Config) error {
	return applySetFlags(fs, func(onto *pflag.FlagSet) { bindConfigFlags(onto, c) })
}

// applySetFlags binds a fresh flag set with bind and sets on it every flag
// that was set on fs (Changed), so the bound fields take a flag's value
// only when it was given.
func applySetFlags(fs *pflag.FlagSet, bind func(*pflag.FlagSet)) error {
	onto := pflag.NewFlagSet("config", pflag.ContinueOnError)
	bind(onto)
	var errs []error
	onto.VisitAll(func(f *pflag.Flag) {
		set := fs.Lookup(f.Name)
		if set == nil || !set.Changed {
			return
		}
		// A list's String() is not what its Set() parses: copy the items.
		if from, ok := set.Value.(pflag.SliceValue); ok {
			if to, ok := f.Value.(pflag.SliceValue); ok {
				errs = append(errs, to.Replace(from.GetSlice()))
				return
			}
		}
		errs = append(errs, onto.Set(f.Name, set.Value.String()))
	})
	return errors.Join(errs...)
}

// durabilityValue is the --durability flag.
type durabilityValue struct{ p *mqnode.Durability }

func (v durabilityValue) String() string { return string(*v.p) }
func (v durabilityValue) Type() string   { return "fsync|async" }
func (v durabilityValue) Set(s string) error {
	switch d := mqnode.Durability(s); d {
	case mqnode.DurabilityFsync, mqnode.DurabilityAsync:
		*v.p = d
		return nil
	}
	return fmt.Errorf("want %s or %s", mqnode.DurabilityFsync, mqnode.DurabilityAsync)
}

// boolPtrValue is a flag for a *bool field (nil: the default).
type boolPtrValue struct{ p **bool }

func (v boolPtrValue) Type() string { return "bool" }
func (v boolPtrValue) String() string {
	if *v.p == nil {
		return ""
	}
	return strconv.FormatBool(**v.p)
}
func (v boolPtrValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*v.p = &b
	return nil
}

// queueNamesValue declares queues (comma-separated or repeated); a queue
// the file already configures keeps its settings.
type queueNamesValue struct {
	p *map[string]mqnode.QueueConfig
}

func (v queueNamesValue) Type() string { return "name" }
func (v queueNamesValue) String() string {
	names := make([]string, 0, len(*v.p))
	for name := range *v.p {
		names = append(names, name)
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}
func (v queueNamesValue) Set(s string) error {
	if *v.p == nil {
		*v.p = map[string]mqnode.QueueConfig{}
	}
	for name := range strings.SplitSeq(s, ",") {
		if _, ok := (*v.p)[name]; !ok {
			(*v.p)[name] = mqnode.QueueConfig{}
		}
	}
	return nil
}
