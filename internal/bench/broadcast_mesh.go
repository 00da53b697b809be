package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/meshtest"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

// bcNode is one host of the benchmark mesh: a node agent (gossip, NATS
// routes and gateways, backlog publisher) and a client of it.
type bcNode struct {
	idc, name string
	agent     *mesh.NodeAgent
	client    *mqnode.Client // in-process: the producer's and the consumer's
}

// bcCluster is the benchmark mesh: idcs × nodesPerIDC nodes on loopback,
// a meshtest cluster (secured as a real mesh: TLS on routes and gateways,
// a gossip keyring).
type bcCluster struct {
	mesh  *meshtest.Cluster
	nodes []*bcNode
}

// startCluster starts the nodes one after the other (each joins through
// the ones up) and waits until every node sees every other alive and can
// reach it over NATS. On error it stops what it started.
func startCluster(ctx context.Context, o *broadcastOptions, root string, log *slog.Logger) (*bcCluster, error) {
	sctx, cancel := context.WithTimeout(ctx, o.setupTimeout)
	defer cancel()
	mc, err := meshtest.Start(sctx, meshtest.Options{IDCs: o.idcs, NodesPerIDC: o.nodesPerIDC, Dir: root, Logger: log,
		FormWithin: o.setupTimeout})
	if err != nil {
		return nil, err
	}
	c := &bcCluster{mesh: mc}
	for _, n := range mc.Nodes {
		c.nodes = append(c.nodes, &bcNode{idc: n.IDC, name: n.Name, agent: n.Agent(), client: n.Client()})
	}
	err = meshtest.Wait(ctx, o.setupTimeout, "every node to reach every node over NATS routes and gateways", func() bool {
		for _, from := range mc.Nodes {
			for _, to := range mc.Nodes {
				if from != to && !meshtest.Reaches(ctx, from, to) {
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// stop stops the nodes one after the other, each with a graceful leave.
func (c *bcCluster) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_ = c.mesh.Stop(ctx)
}

// bcWorker is one worker's backlog picture: a watcher and a view on its
// own in-process connection to its host's node, with one filter config.
type bcWorker struct {
	filter int // index in the options' filter list
	node   *bcNode
	nc     *nats.Conn
	view   *backlog.View
	w      *backlog.Watcher
	// patterns are the worker's resolved subscriptions, per tier (nil:
	// not subscribed); minBacklog the filter's per tier.
	patterns   [backlog.NumTiers]*backlog.Pattern
	minBacklog [backlog.NumTiers]uint64
}

// startWorker subscribes a worker on n with filters f.
func startWorker(fi int, f backlog.Filters, n *bcNode, log *slog.Logger) (*bcWorker, error) {
	w := &bcWorker{filter: fi, node: n, view: backlog.NewView(nil)}
	subs, err := f.Resolve(n.idc, n.name)
	if err != nil {
		return nil, err
	}
	for _, sub := range subs {
		w.patterns[sub.Tier], w.minBacklog[sub.Tier] = &sub.Pattern, sub.Filter.MinBacklog
	}
	nc, err := n.agent.Node.Connect(nats.Name("bench-worker-" + n.name))
	if err != nil {
		return nil, err
	}
	w.nc = nc
	w.w = backlog.NewWatcher(nc, w.view, backlog.WatcherConfig{IDC: n.idc, Node: n.name, Filters: f, Logger: log})
	if err := w.w.Start(context.Background()); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *bcWorker) close() {
	if w.w != nil {
		w.w.Kill()
	}
	w.nc.Close()
}

// hears reports through which tier, nearest first, the worker hears a
// notice of queue on node n with ready tasks; ok false when it does not.
// A node heartbeat (backlog.HeartbeatQueue) is heard whatever ready says.
func (w *bcWorker) hears(n *bcNode, queue string, ready uint64) (backlog.Tier, bool) {
	for _, t := range backlog.Tiers {
		hb := queue == backlog.HeartbeatQueue
		if hb && !backlog.DefaultPolicies[t].NodeHeartbeat {
			continue // this tier carries no node heartbeats
		}
		enough := ready >= w.minBacklog[t] || hb
		p := w.patterns[t]
		if p == nil || !enough {
			continue
		}
		// A summary tier carries the node when its IDC's summary does:
		// the bench's IDCs are smaller than a summary's top K, and the
		// nodes run one shard (shard 0).
		subj := backlog.Subject(t, n.idc, n.name, queue)
		if p.Summary {
			subj = backlog.SummarySubject(t, n.idc, 0)
		}
		if p.Matches(subj) {
			return t, true
		}
	}
	return 0, false
}

// counts is a worker's notice counters at one moment.
type counts struct {
	accepted, dropped [backlog.NumTiers]uint64
}

func (w *bcWorker) counts() counts {
	st := w.view.Stats()
	return counts{accepted: st.Accepted, dropped: st.Dropped}
}

// sees reports whether the worker's view has queue on n with tasks ready.
func (w *bcWorker) sees(n *bcNode, queue string) bool {
	for _, e := range w.view.Entries() {
		if e.IDC == n.idc && e.Node == n.name && e.Queue == queue {
			return e.Ready > 0
		}
	}
	return false
}

// load is the light steady load: on every node a producer enqueueing rate
// tasks/s on the steady queue and a consumer pulling and acking them from
// the same node.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

// bcSteadyQueue is the queue of the steady load.
const bcSteadyQueue = "steady"

func startLoad(ctx context.Context, c *bcCluster, rate float64) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{cancel: cancel}
	for _, n := range c.nodes {
		l.wg.Add(2)
		go func() { defer l.wg.Done(); l.fail(produce1(ctx, n, rate)) }()
		go func() { defer l.wg.Done(); l.fail(consume(ctx, n)) }()
	}
	return l
}

func (l *load) fail(err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
}

// failed returns the first error of a producer or consumer.
func (l *load) failed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// stop ends the load and returns its first error.
func (l *load) stop() error {
	l.cancel()
	l.wg.Wait()
	return l.failed()
}

// produce1 enqueues rate tasks/s on n's steady queue, in ticks of 20 ms.
func produce1(ctx context.Context, n *bcNode, rate float64) error {
	const tick = 20 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start, sent := time.Now(), 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			due := int(rate*now.Sub(start).Seconds()) - sent
			if due <= 0 {
				continue
			}
			items := make([]*mqnode.EnqueueItem, due)
			for i := range items {
				items[i] = &mqnode.EnqueueItem{Payload: []byte("steady")}
			}
			if _, err := n.client.Enqueue(ctx, bcSteadyQueue, items...); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("producer on %s: %w", n.name, err)
			}
			sent += due
		}
	}
}

// consume pulls (long-polling) and acks n's steady queue.
func consume(ctx context.Context, n *bcNode) error {
	for ctx.Err() == nil {
		if _, err := pullAck(ctx, n, bcSteadyQueue, 100, 500*time.Millisecond); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("consumer on %s: %w", n.name, err)
		}
	}
	return nil
}

// pullAck pulls up to max tasks of queue from n, waiting up to wait for
// the first, acks them, and returns how many there were.
func pullAck(ctx context.Context, n *bcNode, queue string, max int, wait time.Duration) (int, error) {
	ds, _, err := n.client.Pull(ctx, mqnode.PullRequest{Queue: queue, MaxTasks: max, MaxWait: wait, Lease: 30 * time.Second,
		WorkerID: "bench-consumer-" + n.name})
	if err != nil || len(ds) == 0 {
		return 0, err
	}
	items := make([]*mqnode.AckItem, len(ds))
	for i, d := range ds {
		items[i] = &mqnode.AckItem{Receipt: d.GetReceipt()}
	}
	res, err := n.client.Ack(ctx, items...)
	if err != nil {
		return 0, err
	}
	for _, r := range res {
		if err := mqnode.ItemErr(r); err != nil {
			return 0, err
		}
	}
	return len(ds), nil
}

// waitUntil is waitFor with an error naming what it waited for.
func waitUntil(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	if err := waitFor(ctx, timeout, cond); err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}
