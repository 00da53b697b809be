package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/dashboard"
	"github.com/mqmesh/mqmesh/internal/opshttp"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/worker"
)

// defaultMinFree is the free space under which a node reports not ready.
const defaultMinFree = 64 << 20

// opsFlags are the operations endpoint flags of `mqmesh node` and
// `mqmesh worker`.
type opsFlags struct {
	// HTTP is --http: the metrics/health (and, on a node, dashboard)
	// address; "" = none.
	HTTP    string
	MinFree uint64
}

func bindOpsFlags(fs *pflag.FlagSet, o *opsFlags, node bool) {
	what := "/metrics, /healthz and /readyz"
	if node {
		what += " and the web dashboard"
		fs.Uint64Var(&o.MinFree, "ready-min-free", defaultMinFree, "bytes free on the data disk under which /readyz reports the node not ready (disk full)")
	}
	fs.StringVar(&o.HTTP, "http", "", "serve "+what+" on this address (host:port); empty: off")
}

// opsReadyJSON is the --json line of the operations endpoint.
type opsReadyJSON struct {
	Event string `json:"event"` // "http"
	URL   string `json:"url"`
}

// startNodeOps serves the node's operations endpoint when --http is set
// (nil, nil otherwise). agent is nil for a standalone node.
func (o *opsFlags) startNodeOps(n *mqnode.Node, agent *mesh.NodeAgent, pub func() *backlog.Publisher, insecure bool, log *slog.Logger) (*opshttp.Server, error) {
	if o.HTTP == "" {
		return nil, nil
	}
	cfg := n.Config()
	if cfg.Security == nil && !isLoopback(o.HTTP) && !insecure {
		return nil, fmt.Errorf("refusing --http %s beyond loopback without --secrets (no TLS, no admin token); --insecure overrides", o.HTTP)
	}
	reg := prometheus.NewRegistry()
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"idc": cfg.IDC, "node": cfg.Name}, reg)
	checks := []opshttp.Check{
		{Name: "store", Check: n.CheckStore},
		{Name: "nats", Check: n.CheckNATS},
		{Name: "disk", Check: func() error { return n.CheckDisk(o.MinFree) }},
	}
	cols := []prometheus.Collector{n.Collector(), backlog.PublisherCollector(pub)}
	if agent != nil {
		cols = agent.Collectors()
		checks = append(checks, opshttp.Check{Name: "mesh", Check: agent.Mesh.CheckJoined})
	}
	for _, c := range cols {
		if err := wrapped.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	hc := opshttp.Config{Addr: o.HTTP, Registry: reg, Ready: checks, Logger: log}
	if err := secureHTTP(&hc, cfg.Security, true); err != nil {
		return nil, err
	}
	// The dashboard asks the mesh through its own connection to the node.
	nc, err := n.Connect(nats.Name("mqmesh-dashboard"))
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	hc.Handlers = dashboard.New(dashboard.Config{NC: nc, IDC: cfg.IDC, Node: cfg.Name, Logger: log}).Handlers()
	hc.OnClose = nc.Close
	s, err := opshttp.Start(hc)
	if err != nil {
		nc.Close()
	}
	return s, err
}

// secureHTTP sets the admin token and (with the node certificate, which a
// node always has and a worker host may) TLS from the secrets; nothing
// without secrets (loopback only: the node refuses other listeners).
func secureHTTP(hc *opshttp.Config, set *secrets.Set, needTLS bool) error {
	if set == nil {
		return nil
	}
	tok, err := set.AdminToken()
	if err != nil {
		return fmt.Errorf("--http: %w", err)
	}
	hc.Token = tok
	tc, err := set.ServerTLS()
	switch {
	case err == nil:
		hc.TLS = tc
	case needTLS:
		return fmt.Errorf("--http: %w", err)
	}
	return nil
}

// startWorkerOps serves the pool's operations endpoint when --http is set.
func (o *opsFlags) startWorkerOps(p *worker.Pool, nc *nats.Conn, set *secrets.Set, log *slog.Logger) (*opshttp.Server, error) {
	if o.HTTP == "" {
		return nil, nil
	}
	if set == nil && !isLoopback(o.HTTP) {
		return nil, fmt.Errorf("refusing --http %s beyond loopback without --secrets (no TLS, no admin token)", o.HTTP)
	}
	cfg := p.Config()
	reg := prometheus.NewRegistry()
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"idc": cfg.IDC, "host": cfg.Host, "pool": cfg.ID}, reg)
	if err := wrapped.Register(p.Collector()); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	checks := []opshttp.Check{{Name: "nats", Check: func() error {
		if !nc.IsConnected() {
			return errors.New("not connected to the node (" + nc.Status().String() + ")")
		}
		return nil
	}}}
	hc := opshttp.Config{Addr: o.HTTP, Registry: reg, Ready: checks, Logger: log}
	if err := secureHTTP(&hc, set, false); err != nil {
		return nil, err
	}
	return opshttp.Start(hc)
}

// announceOps prints where the endpoint serves (stdout, after the ready
// line) and returns a func that stops it.
func announceOps(s *opshttp.Server, w io.Writer, asJSON bool) func() {
	if s == nil {
		return func() {}
	}
	if asJSON {
		_ = json.NewEncoder(w).Encode(opsReadyJSON{Event: "http", URL: s.URL()})
	} else {
		fmt.Fprintf(w, "metrics, health and dashboard at %s\n", s.URL())
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	}
}
