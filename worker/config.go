package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mesh"
)

// Defaults of Config.
const (
	DefaultSlots          = 16
	DefaultLease          = 30 * time.Second
	DefaultHandlerTimeout = 5 * time.Minute
	// minDefaultPrefetch is the least default MaxPrefetch.
	minDefaultPrefetch = 256
)

// Config configures a worker pool.
type Config struct {
	// ID names the pool in the mesh and in its pulls (leases are released
	// by it when the pool dies); a subject token, unique in the mesh.
	// Default: <host>-<pid>.
	ID string `yaml:"id"`
	// IDC of the pool's host; a subject token. Required.
	IDC string `yaml:"idc"`
	// Host names the host. Default: the OS host name.
	Host string `yaml:"host"`
	// Node is the MQ node of the pool's own host, pulled first; "" for a
	// worker-only host, whose first tier is then its IDC.
	Node string `yaml:"node"`
	// Slots is the number of handlers that run at once. Default 16.
	Slots int `yaml:"slots"`
	// Lease is the visibility timeout asked for each task; a running
	// handler's lease is extended every ExtendEvery (default Lease/3).
	Lease       time.Duration `yaml:"lease"`
	ExtendEvery time.Duration `yaml:"extend_every"`
	// MaxPrefetch caps the tasks the pool leases beyond its free slots,
	// waiting for one: pulls are pipelined, and the prefetch is sized by
	// the measured round trip of the own node's pulls and the handlers'
	// rate (2 × rate × RTT), up to this. Default 4 × Slots, at least 256;
	// negative: none (a pull asks for no more than the free slots).
	MaxPrefetch int `yaml:"max_prefetch"`
	// HandlerTimeout is a handler's deadline unless its own is set. 5m.
	HandlerTimeout time.Duration `yaml:"handler_timeout"`
	// Policy tunes the scheduler (local first, then helping).
	Policy PolicyConfig `yaml:"policy"`
	// Filters are the backlog subscriptions; FilterFile, when set, is
	// loaded and watched instead. Default: local + IDC tiers.
	Filters    *backlog.Filters `yaml:"-"`
	FilterFile string           `yaml:"filter_file"`
	// Mesh, when set, makes the pool a gossip member (role worker): nodes
	// then release its leases the moment it dies, and its view forgets
	// nodes that die. Its port defaults to mesh.RandomPort, not the node's
	// 7946: a pool shares its host with a node.
	Mesh *mesh.Config `yaml:"mesh"`
	// Seed fixes the scheduler's random source (0: random).
	Seed uint64 `yaml:"seed"`

	Logger *slog.Logger `yaml:"-"`
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.Mesh != nil && c.Mesh.BindPort == 0 {
		m := *c.Mesh
		m.BindPort = mesh.RandomPort
		c.Mesh = &m
	}
	if c.Host == "" {
		c.Host, _ = os.Hostname()
	}
	if c.ID == "" {
		c.ID = fmt.Sprintf("%s-%d", sanitize(c.Host), os.Getpid())
	}
	if c.Slots <= 0 {
		c.Slots = DefaultSlots
	}
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	if c.ExtendEvery <= 0 {
		c.ExtendEvery = c.Lease / 3
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = DefaultHandlerTimeout
	}
	if c.MaxPrefetch == 0 {
		c.MaxPrefetch = max(4*c.Slots, minDefaultPrefetch)
	}
	c.Policy = c.Policy.WithDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks a defaulted config.
func (c Config) Validate() error {
	var errs []error
	errs = append(errs, subject.Validate("id", c.ID), subject.Validate("idc", c.IDC))
	if c.Node != "" {
		errs = append(errs, subject.Validate("node", c.Node))
	}
	if c.ExtendEvery >= c.Lease {
		errs = append(errs, fmt.Errorf("extend_every %s: must be shorter than lease %s", c.ExtendEvery, c.Lease))
	}
	if c.Slots > 100000 {
		errs = append(errs, fmt.Errorf("slots %d: at most 100000", c.Slots))
	}
	return errors.Join(errs...)
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) == 0 || b[0] == '-' {
		b = append([]byte("w"), b...)
	}
	if len(b) > 40 {
		b = b[:40]
	}
	return string(b)
}

// HandlerOption configures one registered handler.
type HandlerOption func(*handlerConfig) error

type handlerConfig struct {
	timeout time.Duration
}

// Timeout sets the handler's deadline (> 0).
func Timeout(d time.Duration) HandlerOption {
	return func(h *handlerConfig) error {
		if d <= 0 {
			return fmt.Errorf("worker: handler timeout %s: must be positive", d)
		}
		h.timeout = d
		return nil
	}
}
