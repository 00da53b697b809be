package main

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mqmesh/mqmesh/mqnode"
)

func TestLoadConfigDurations(t *testing.T) {
	p := writeFile(t, "node.yaml", `
default_lease: 45s
max_pull_wait: 1m30s
queue_defaults:
  backoff_base: 250ms
queues:
  orders:
    retention: -1s
    max_attempts: 3
`)
	cfg, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DefaultLease != 45*time.Second || cfg.MaxPullWait != 90*time.Second {
		t.Fatalf("default_lease %s, max_pull_wait %s: want 45s, 1m30s", cfg.DefaultLease, cfg.MaxPullWait)
	}
	if cfg.QueueDefaults.BackoffBase != 250*time.Millisecond {
		t.Fatalf("queue_defaults.backoff_base %s: want 250ms", cfg.QueueDefaults.BackoffBase)
	}
	if q := cfg.Queues["orders"]; q.Retention != -time.Second || q.MaxAttempts != 3 {
		t.Fatalf("queues.orders %+v: want retention -1s, max_attempts 3", q)
	}
	if err := cfg.WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "idc: east\nlistn: 127.0.0.1:1\n", []string{"line 2", "listn"}},
		{"unknown nested key", "queue_defaults:\n  max_attempt: 3\n", []string{"max_attempt"}},
		{"unknown queue key", "queues:\n  orders:\n    ttl: 1h\n", []string{"ttl"}},
		// yaml.v3 refuses a bare number for a duration rather than reading
		// nanoseconds.
		{"duration without unit", "default_lease: 30\n", []string{"line 1", "time.Duration", "with a unit"}},
		{"bad duration", "default_lease: soon\n", []string{"soon"}},
		{"two documents", "idc: a\n---\nidc: b\n", []string{"one YAML document"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(writeFile(t, "node.yaml", tc.yaml))
			wantErr(t, err, tc.want...)
		})
	}
	_, err := loadConfig("/nonexistent/node.yaml")
	wantErr(t, err, "/nonexistent/node.yaml")
}

func TestLoadConfigEmptyFile(t *testing.T) {
	cfg, err := loadConfig(writeFile(t, "node.yaml", "# nothing set\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IDC != "" || cfg.Queues != nil {
		t.Fatalf("empty file gave %+v", cfg)
	}
}

// configKeys returns the YAML keys of a config, flattened one level
// ("queue_defaults.max_attempts").
func configKeys(t *testing.T, doc []byte) []string {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k, v := range m {
		keys = append(keys, k)
		if sub, ok := v.(map[string]any); ok && k == "queue_defaults" {
			for sk := range sub {
				keys = append(keys, k+"."+sk)
			}
		}
	}
	slices.Sort(keys)
	return keys
}

func defaultConfigYAML(t *testing.T) []byte {
	t.Helper()
	b, err := yaml.Marshal(mqnode.Config{}.WithDefaults())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The example file must load strictly, validate, name every key of
// mqnode.Config, and state the true defaults.
func TestExampleConfig(t *testing.T) {
	const path = "../../configs/node.yaml"
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.WithDefaults().Validate(); err != nil {
		t.Fatalf("%s does not validate: %v", path, err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := defaultConfigYAML(t)
	if got, want := configKeys(t, raw), configKeys(t, want); !slices.Equal(got, want) {
		t.Fatalf("%s keys:\n%v\nmqnode.Config keys:\n%v", path, got, want)
	}
	got, err := yaml.Marshal(cfg.WithDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s does not state the defaults; effective:\n%s\ndefaults:\n%s", path, got, want)
	}
}

// Every config key has a flag: the key with '-' for '_' (queue_defaults
// keys without the prefix; queues by --queue).
func TestConfigFlagsCoverEveryKey(t *testing.T) {
	fs := newNodeCommand().Flags()
	for _, key := range configKeys(t, defaultConfigYAML(t)) {
		name := key
		switch {
		case key == "queue_defaults":
			continue
		case key == "queues":
			name = "queue"
		case key == "topics":
			name = "topic"
		case key == "throttle":
			name = "no-throttle" // and --cpu-ceiling, --backend-budget; the rest by file
		case key == "trace":
			name = "trace-retention" // and --no-trace, --trace-sample; the rest by file
		case key == "buddy":
			name = "buddy-idc" // and --takeover-after, --partition-policy; the rest by file
		default:
			name = strings.TrimPrefix(name, "queue_defaults.")
		}
		name = strings.ReplaceAll(name, "_", "-")
		if fs.Lookup(name) == nil {
			t.Errorf("config key %s has no flag --%s", key, name)
		}
	}
}

// printConfig runs `mqmesh node ... --print-config` and decodes the result
// strictly.
func printConfig(t *testing.T, args ...string) fileConfig {
	t.Helper()
	out := mustCLI(t, append([]string{"node", "--print-config"}, args...)...)
	cfg, err := loadConfig(writeFile(t, "effective.yaml", out))
	if err != nil {
		t.Fatalf("--print-config output does not load: %v\n%s", err, out)
	}
	return cfg
}

func TestNodeFlagsOverrideFileOnlyWhenSet(t *testing.T) {
	file := writeFile(t, "node.yaml", `
name: file-name
idc: east
durability: async
default_lease: 45s
auto_create_queues: false
queue_defaults:
  max_attempts: 4
queues:
  orders:
    max_attempts: 3
`)
	cfg := printConfig(t, "--config", file, "--name", "n9", "--queue", "orders,mail", "--queue", "push", "--backoff-max", "1m")
	if cfg.Name != "n9" || cfg.IDC != "east" || cfg.Durability != mqnode.DurabilityAsync || cfg.DefaultLease != 45*time.Second {
		t.Fatalf("name %q idc %q durability %q default_lease %s: want n9 east async 45s", cfg.Name, cfg.IDC, cfg.Durability, cfg.DefaultLease)
	}
	if cfg.AutoCreateQueues == nil || *cfg.AutoCreateQueues {
		t.Fatalf("auto_create_queues %v: want the file's false", cfg.AutoCreateQueues)
	}
	if q := cfg.QueueDefaults; q.MaxAttempts != 4 || q.BackoffMax != time.Minute {
		t.Fatalf("queue_defaults %+v: want max_attempts 4 (file), backoff_max 1m (flag)", q)
	}
	if len(cfg.Queues) != 3 || cfg.Queues["orders"].MaxAttempts != 3 {
		t.Fatalf("queues %+v: want orders (max_attempts 3 kept), mail, push", cfg.Queues)
	}

	cfg = printConfig(t, "--config", file, "--idc", "west", "--durability", "fsync", "--auto-create-queues", "--default-lease", "1m")
	if cfg.Name != "file-name" || cfg.IDC != "west" || cfg.Durability != mqnode.DurabilityFsync ||
		!*cfg.AutoCreateQueues || cfg.DefaultLease != time.Minute {
		t.Fatalf("flags did not override the file: %+v", cfg)
	}
}

func TestNodeDefaults(t *testing.T) {
	cfg := printConfig(t)
	if cfg.DataDir != mqnode.DefaultDataDir || cfg.Listen != mqnode.DefaultListen || cfg.Durability != mqnode.DurabilityFsync {
		t.Fatalf("defaults: data %q listen %q durability %q", cfg.DataDir, cfg.Listen, cfg.Durability)
	}
	if cfg.Name != mqnode.DefaultName() {
		t.Fatalf("name %q: want the host name %q", cfg.Name, mqnode.DefaultName())
	}
}

func TestNodeConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"bad durability flag", []string{"--durability", "maybe"}, []string{"--durability", "want fsync or async"}},
		{"bad durability in file", []string{"--config", writeFile(t, "d.yaml", "durability: maybe\n")}, []string{`durability "maybe"`}},
		{"unknown key", []string{"--config", writeFile(t, "k.yaml", "max_paylod: 5\n")}, []string{"max_paylod"}},
		{"bad name", []string{"--name", "a.b"}, []string{"name", `"a.b"`}},
		{"bad queue", []string{"--queue", "a.>"}, []string{"queues key", `"a.>"`}},
		{"payloads", []string{"--max-payload", "9000000"}, []string{"nats_max_payload"}},
		{"bad duration flag", []string{"--default-lease", "30"}, []string{"--default-lease", "missing unit"}},
		{"log format", []string{"--log-format", "xml"}, []string{"--log-format"}},
		{"log level", []string{"--log-level", "loud"}, []string{"--log-level"}},
		{"missing file", []string{"--config", "/nonexistent/node.yaml"}, []string{"/nonexistent/node.yaml"}},
		{"stray argument", []string{"extra"}, []string{"unknown command"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := cli(t, "", append([]string{"node"}, tc.args...)...)
			wantErr(t, err, tc.want...)
			if out != "" {
				t.Fatalf("stdout %q on error", out)
			}
		})
	}
}

func TestThrottleFlags(t *testing.T) {
	file := writeFile(t, "node.yaml", `
throttle:
  cpu:
    ceiling: 0.7
  backends:
    user-db: {budget: 100}
`)
	cfg := printConfig(t, "--config", file, "--backend-budget", "user-db=500,search=40", "--no-throttle")
	th := cfg.Throttle
	if !th.Disabled || th.CPU.Ceiling != 0.7 || th.Backends["user-db"].Budget != 500 || th.Backends["search"].Budget != 40 {
		t.Fatalf("effective throttle config %+v", th)
	}
	for _, bad := range []string{"user.db=5", "user-db", "user-db=0", "x=abc"} {
		if _, _, err := cli(t, "", "node", "--print-config", "--backend-budget", bad); err == nil {
			t.Errorf("--backend-budget %q accepted", bad)
		}
	}
	if _, _, err := cli(t, "", "node", "--print-config", "--cpu-ceiling", "1.5"); err == nil || !strings.Contains(err.Error(), "throttle.cpu.ceiling") {
		t.Errorf("--cpu-ceiling 1.5: %v", err)
	}
}
