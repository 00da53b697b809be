package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/worker"
	"github.com/mqmesh/mqmesh/worker/demo"
)

// workerFile is a worker config file: the keys of worker.Config at the top
// level, the URL of the node to connect to, and a demo handler per queue.
type workerFile struct {
	worker.Config `yaml:",inline"`
	// Server is the NATS URL of the pool's own node (on a worker-only
	// host: any node of its IDC). Default nats://127.0.0.1:4222.
	Server string `yaml:"server"`
	// Queues maps each queue to its demo handler.
	Queues demo.Queues `yaml:"queues"`
}

// loadWorkerConfig reads a worker config file strictly (an unknown key is
// an error naming the key and its line). nodeGiven says the file has a
// node key ("" = a worker-only host).
func loadWorkerConfig(path string) (cfg workerFile, nodeGiven bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, false, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, false, fmt.Errorf("config %s: %w", path, friendlyYAMLError(err))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return cfg, false, fmt.Errorf("config %s: want one YAML document, found more", path)
	}
	// The file decoded strictly; this second, loose pass only asks whether
	// the node key is there at all.
	var probe struct {
		Node *string `yaml:"node"`
	}
	_ = yaml.Unmarshal(b, &probe)
	return cfg, probe.Node != nil, nil
}

// friendlyYAMLError names the config sections instead of Go types, and
// reminds of duration units.
func friendlyYAMLError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		r := strings.NewReplacer(
			"in type main.workerFile", "in the worker config",
			"in type demo.Spec", "in a queue's handler (kind, latency, error_rate, give_up_rate, retry_delay, fanout, slowdown, timeout, seed)",
			"in type demo.latencyFields", "in latency (dist, value, min, max, median, p99)",
			"in type demo.Fanout", "in fanout (queue, count, max_count, delay)",
			"in type demo.Slowdown", "in a slowdown (latency_factor, error_rate)",
			"in type worker.PolicyConfig", "in policy",
			"in type mesh.Config", "in mesh",
		)
		for i, e := range te.Errors {
			te.Errors[i] = r.Replace(e)
		}
	}
	if strings.Contains(err.Error(), "into time.Duration") {
		err = fmt.Errorf("%w\n  (a duration is a number with a unit: 500ms, 30s, 10m)", err)
	}
	return err
}

// validateWorkerMesh checks the gossip settings of the mesh section (the
// member's identity is the pool's, checked with the worker config).
func validateWorkerMesh(m mesh.Config) error {
	if len(m.Seeds) == 0 {
		return errors.New("mesh.seeds: none: a worker joins an existing mesh: name the gossip address of a member (--seed host:port)")
	}
	m.Meta = mesh.Meta{Role: mesh.RoleWorker, IDC: "stand-in", Name: "stand-in"}
	if err := m.WithDefaults().Validate(); err != nil {
		return fmt.Errorf("mesh: %w", err)
	}
	return nil
}

// logFlags are the logging flags of a long-running command. (`mqmesh
// node` has the same two flags on nodeOptions and could use this.)
type logFlags struct {
	Level  string
	Format string
}

func (l *logFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&l.Level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.Format, "log-format", "text", "log format: text or json")
}

func (l logFlags) validate() error {
	if _, err := parseLevel(l.Level); err != nil {
		return err
	}
	if l.Format != "text" && l.Format != "json" {
		return fmt.Errorf("--log-format %q: want text or json", l.Format)
	}
	return nil
}

// logger returns a logger writing to w (the flags validated).
func (l logFlags) logger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(l.Level)
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
