package mqnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/internal/ratelog"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/subject"
)

// Version is the node software version reported in NodeInfo.
const Version = "0.1.0"

// Node is one host's MQ node: a Badger store in Config.DataDir, an embedded
// NATS server, and the queue API served on mq.<idc>.<name>.<op>.
//
// Lifecycle: New, then the contract of package internal/lifecycle: Start
// once; Stop (graceful: requests in flight are answered) or Kill (abrupt:
// they are cut); both idempotent and safe before Start.
type Node struct {
	cfg Config
	log *slog.Logger

	life lifecycle.Guard
	mu   sync.Mutex

	ns  *server.Server
	nc  *nats.Conn
	st  *store
	svc *service

	// NATSOptions, when set before Start, may adjust the embedded server's
	// options (the mesh uses it to add routes and gateways). It is called
	// again by ReloadNATS.
	NATSOptions func(*server.Options)
	// WorkerMember, when set before Start, names the mesh membership of the
	// worker a pull names (its gossip member and address; "" when unknown
	// or ambiguous). The lease records it, so only that member's death
	// releases the lease (see ReleaseWorker).
	WorkerMember func(workerID string) string

	rp        *replicator // replicate.go
	extraOps  map[string]OpHandler
	topicSync *topicSync // topicsync.go

	workerInfo atomic.Pointer[func(string) (WorkerInfo, bool)] // see SetWorkerInfo

	// sec is the security in force: Config.Security, replaced by
	// SetSecurity.
	sec atomic.Pointer[secrets.Set]

	// handshakes orders in-process connects against reloads: with
	// authorization on, nats-server re-authorizes every client on each
	// reload (it always treats users and accounts as changed), and a
	// client whose CONNECT it has not processed yet fails that check and
	// is closed ("read/write on closed pipe"). Connect holds it shared
	// until its handshake is done; ReloadNATS holds it alone.
	handshakes sync.RWMutex

	shareStop chan struct{}
	shareDone chan struct{}
}

// OpHandler serves one extra operation on the node's subject prefix: it gets
// the request body and returns the reply message. It runs on its own
// goroutine and must honour ctx (cancelled at Stop).
type OpHandler func(ctx context.Context, body []byte) proto.Message

// HandleOp adds an operation served on mq.<idc>.<name>.<op> (e.g. the
// mesh's "members"). Call it before Start; op must be a valid subject token
// not used by the node itself.
func (n *Node) HandleOp(op string, h OpHandler) error {
	if err := subject.Validate("op", op); err != nil {
		return err
	}
	switch op {
	case OpEnqueue, OpPull, OpAck, OpStats, OpDLQ, OpInfo, OpQueueDelete, OpReplay, OpTopic:
		return fmt.Errorf("mqnode: op %q is built in", op)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.life.State() != lifecycle.Idle {
		return errors.New("mqnode: HandleOp after Start")
	}
	if n.extraOps == nil {
		n.extraOps = map[string]OpHandler{}
	}
	n.extraOps[op] = h
	return nil
}

// ReloadNATS rebuilds the embedded server's options (calling NATSOptions
// again) and hot-reloads them: e.g. cluster routes added or removed.
func (n *Node) ReloadNATS() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ns == nil || n.life.State() == lifecycle.Stopped {
		return ErrClosed
	}
	opts, err := n.natsOptions()
	if err != nil {
		return err
	}
	n.handshakes.Lock()
	defer n.handshakes.Unlock()
	if err := n.ns.ReloadOptions(opts); err != nil {
		return fmt.Errorf("mqnode: reload nats options: %w", err)
	}
	return nil
}

// New checks cfg (after applying defaults) and returns a Node ready to Start.
func New(cfg Config) (*Node, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mqnode: config: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("component", "mqnode", "node", cfg.Name, "idc", cfg.IDC)}
	n.life.Name = "mqnode"
	n.sec.Store(cfg.Security)
	n.rp = newReplicator(n)
	return n, nil
}

// Security returns the secrets in force (nil: none).
func (n *Node) Security() *secrets.Set { return n.sec.Load() }

// SetSecurity replaces the secrets of a node started with some and reloads
// its NATS server: role keys added to or removed from roles.json take
// effect at once (a removed key's connections are closed). The node's own
// key and certificate must stay the same (its connections and gateways keep
// theirs): rotate those by restarting nodes one at a time.
func (n *Node) SetSecurity(set *secrets.Set) error {
	if set == nil || n.sec.Load() == nil {
		return errors.New("mqnode: security can be changed, not switched on or off, while a node runs")
	}
	if err := set.CheckNode(); err != nil {
		return fmt.Errorf("mqnode: security: %w", err)
	}
	old := n.sec.Swap(set)
	if err := n.ReloadNATS(); err != nil {
		n.sec.Store(old)
		_ = n.ReloadNATS()
		return err
	}
	return nil
}

// Config returns the node's effective configuration (defaults applied).
func (n *Node) Config() Config { return n.cfg }

// Start opens the store, starts the embedded NATS server and begins serving.
// On failure everything started is stopped again and a new Start may be
// made (lifecycle contract).
func (n *Node) Start(ctx context.Context) error {
	return n.life.Start(ctx, func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		err := n.startLocked(ctx)
		if err != nil {
			_ = n.shutdownLocked(context.Background())
			n.ns, n.nc, n.st, n.svc, n.topicSync, n.shareStop, n.shareDone = nil, nil, nil, nil, nil, nil, nil
		}
		return err
	})
}

func (n *Node) startLocked(ctx context.Context) (err error) {
	if n.st, err = openStore(n.cfg); err != nil {
		return err
	}
	n.st.obs.workerInfo = &n.workerInfo
	opts, err := n.natsOptions()
	if err != nil {
		return err
	}
	if n.ns, err = server.NewServer(opts); err != nil {
		return fmt.Errorf("mqnode: nats server: %w", err)
	}
	fatal := make(chan string, 1)
	n.ns.SetLoggerV2(natsLogger{l: n.log.With("component", "nats"), fatal: fatal, violations: &ratelog.Limiter{Every: time.Minute}}, false, false, false)
	go n.ns.Start()
	wait := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	// Poll readiness so a fatal start error (port in use) fails at once.
	for deadline := time.Now().Add(wait); !n.ns.ReadyForConnections(50 * time.Millisecond); {
		select {
		case msg := <-fatal:
			return fmt.Errorf("mqnode: nats server on %s: %s", n.cfg.Listen, msg)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mqnode: nats server not ready within %s", wait)
		}
	}
	if n.nc, err = n.Connect(nats.Name("mqnode-"+n.cfg.Name), nats.MaxReconnects(-1)); err != nil {
		return fmt.Errorf("mqnode: in-process connection: %w", err)
	}
	// Replication first: a restarted primary holds pulls until it has
	// reconciled with its last buddy (replreconcile.go).
	if err := n.rp.start(n.st); err != nil {
		return err
	}
	n.svc = newService(n)
	if err := n.svc.start(); err != nil {
		return err
	}
	if err := n.startTopicSync(); err != nil {
		return err
	}
	n.shareStop, n.shareDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(n.shareDone)
		n.shareUsage(n.nc, n.shareStop)
	}()
	n.log.Info("node started", "listen", n.ClientURL(), "data", n.cfg.DataDir, "durability", n.cfg.Durability)
	return nil
}

func (n *Node) natsOptions() (*server.Options, error) {
	opts := &server.Options{
		ServerName: n.cfg.IDC + "-" + n.cfg.Name,
		NoSigs:     true,
		MaxPayload: int32(n.cfg.NATSMaxPayload),
	}
	if n.cfg.Listen == ListenNone {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(n.cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("mqnode: listen %q: %w", n.cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("mqnode: listen %q: bad port", n.cfg.Listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	if sec := n.sec.Load(); sec != nil {
		if err := sec.ServerOptions(opts); err != nil {
			return nil, fmt.Errorf("mqnode: %w", err)
		}
	}
	if n.NATSOptions != nil {
		n.NATSOptions(opts)
	}
	return opts, nil
}

// Stop stops serving (pending long-polls answer empty, running requests
// finish until ctx ends), closes the store and shuts the NATS server down.
// Leased tasks are ready again when a node starts on the data dir. Safe to
// call twice and before Start.
func (n *Node) Stop(ctx context.Context) error {
	return n.life.Stop(func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.shutdownLocked(ctx)
	})
}

// Kill stops the node at once (lifecycle contract): requests in flight are
// cut, not answered; the store is closed (its lock released) and the NATS
// server shut down. Safe to call twice and before Start.
func (n *Node) Kill() {
	n.life.Kill(func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		cut, cancel := context.WithCancel(context.Background())
		cancel()
		_ = n.shutdownLocked(cut)
	})
}

func (n *Node) shutdownLocked(ctx context.Context) error {
	var errs []error
	if n.shareStop != nil {
		close(n.shareStop)
		<-n.shareDone
	}
	if n.svc != nil {
		errs = append(errs, n.svc.stop(ctx))
	}
	n.rp.close() // after the service: enqueues waiting for the buddy end first
	n.topicSync.close()
	if n.nc != nil {
		n.nc.Close()
	}
	if n.st != nil {
		errs = append(errs, n.st.close())
	}
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
	}
	n.log.Info("node stopped")
	return errors.Join(errs...)
}

// ClientURL is the NATS URL clients connect to ("" without a listener).
func (n *Node) ClientURL() string {
	if n.ns == nil || n.cfg.Listen == ListenNone {
		return ""
	}
	return n.ns.ClientURL()
}

// Server returns the embedded NATS server (nil before Start).
func (n *Node) Server() *server.Server { return n.ns }

// Connect opens a new in-process NATS connection to this node's server (no
// socket). With Config.Security it authenticates as role node (opts may
// name another role's credentials). The caller closes it.
func (n *Node) Connect(opts ...nats.Option) (*nats.Conn, error) {
	if n.ns == nil {
		return nil, ErrClosed
	}
	base := []nats.Option{nats.InProcessServer(n.ns)}
	if sec := n.sec.Load(); sec != nil {
		auth, err := sec.InProcessOptions(secrets.RoleNode)
		if err != nil {
			return nil, err
		}
		base = append(base, auth...)
	}
	n.handshakes.RLock()
	defer n.handshakes.RUnlock()
	return nats.Connect("", append(append(base, opts...), WatchPermissions())...)
}

// Client returns a client of this node over a new in-process connection;
// closing the client closes the connection.
func (n *Node) Client() (*Client, error) {
	nc, err := n.Connect(nats.Name("mqnode-client"))
	if err != nil {
		return nil, err
	}
	c := NewClient(nc, n.cfg.IDC, n.cfg.Name)
	c.ownConn = true
	return c, nil
}

// ReleaseWorker ends now every lease that worker workerID took while it was
// the mesh member member (as WorkerMember named it at the pull), making its
// tasks ready again; the mesh calls it when gossip declares that member
// dead. Leases taken under another membership — another member reusing the
// worker id, or a pull before the node heard of the worker — are left to
// expire: a death releases only what the dead member held. An empty member
// releases nothing.
func (n *Node) ReleaseWorker(workerID, member string) int {
	if n.st == nil || member == "" {
		return 0
	}
	return n.st.releaseWorker(leaseHolder(workerID, member), workerID)
}

// leaseHolder is what a lease records of its worker: the id it pulled with
// and its mesh membership ("" when unknown).
func leaseHolder(workerID, member string) string {
	if workerID == "" {
		return ""
	}
	return workerID + "@" + member
}

// natsLogger routes the embedded server's logs to slog; the first fatal
// message also goes to fatal, which Start watches.
type natsLogger struct {
	l          *slog.Logger
	fatal      chan<- string
	violations *ratelog.Limiter // one violation line per client per minute
}

func (g natsLogger) Noticef(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...)) }
func (g natsLogger) Warnf(f string, a ...any)   { g.l.Warn(fmt.Sprintf(f, a...)) }
func (g natsLogger) Fatalf(f string, a ...any) {
	msg := fmt.Sprintf(f, a...)
	g.l.Error(msg)
	select {
	case g.fatal <- msg:
	default:
	}
}
func (g natsLogger) Errorf(f string, a ...any) {
	msg := fmt.Sprintf(f, a...)
	// A permission violation is logged once per client per minute: a
	// misconfigured or hostile client must not flood the log.
	if i := strings.Index(msg, " - Publish Violation"); i >= 0 || strings.Contains(msg, " - Subscription Violation") {
		if i < 0 {
			i = strings.Index(msg, " - Subscription Violation")
		}
		ok, suppressed := g.violations.Allow(msg[:i], time.Now())
		if !ok {
			return
		}
		g.l.Warn("permission denied (PERMISSION_DENIED; logged once per client per minute)", "violation", msg, "suppressed_since_last", suppressed)
		return
	}
	g.l.Error(msg)
}
func (g natsLogger) Debugf(f string, a ...any) {}
func (g natsLogger) Tracef(f string, a ...any) {}

// isStopped reports whether Stop or Kill was called.
func (n *Node) isStopped() bool { return n.life.State() == lifecycle.Stopped }
