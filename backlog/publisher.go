package backlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/backlog/backlogpb"
	"github.com/mqmesh/mqmesh/internal/lifecycle"
	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode"
)

// DefaultPoll is how often the publisher looks at the node's queues: the
// bound on how late a crossing is published (plus NATS delivery).
const DefaultPoll = 20 * time.Millisecond

// PublisherConfig configures a node's backlog publisher.
type PublisherConfig struct {
	IDC, Node  string
	NATSClient string // informational: where workers reach the node
	// Policies per tier; the zero value of an entry means its default.
	Policies [NumTiers]TierPolicy
	// Poll is the observation period. Default 20ms.
	Poll time.Duration
	// Source returns the node's queues (mqnode.Node.Levels).
	Source func() []mqnode.QueueLevel
	Logger *slog.Logger
	// Now overrides the clock (tests).
	Now func() time.Time
	// Summarize says whether the node is its IDC's summarizer now (the
	// lowest alive node of the IDC, by gossip; SummaryElected). The
	// summarizer hears the IDC's global tier and publishes its summary
	// (Summarizer). nil: the node is (a lone node).
	Summarize func() bool
	// Summary configures the summarizer (IDC, Node and Incarnation are
	// the publisher's).
	Summary SummaryConfig
}

func (c PublisherConfig) withDefaults() PublisherConfig {
	for _, t := range Tiers {
		if c.Policies[t] == (TierPolicy{}) {
			c.Policies[t] = DefaultPolicies[t]
		}
	}
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c PublisherConfig) validate() error {
	var errs []error
	errs = append(errs, subject.Validate("idc", c.IDC), subject.Validate("node", c.Node), ValidatePolicies(c.Policies))
	if c.Source == nil {
		errs = append(errs, errors.New("source: required"))
	}
	return errors.Join(errs...)
}

// Publisher broadcasts a node's backlog levels on the tier subjects: the
// shell around a Planner (which decides) that observes the node every Poll,
// feeds sync requests in and publishes the planner's notices over NATS.
//
// Lifecycle (package internal/lifecycle): Start once; Stop and Kill are the
// same here (nothing to drain: the loop ends, the sync subscriptions go),
// idempotent and safe before Start. The connection stays the caller's.
type Publisher struct {
	cfg  PublisherConfig
	nc   *nats.Conn
	mu   sync.Mutex // guards plan
	plan *Planner
	sent [NumTiers]atomic.Uint64
	// summaries counts the summaries published.
	summaries atomic.Uint64

	syncSubs []*nats.Subscription
	// sums are the IDC's summarizers while this node is elected (guarded
	// by mu), fed by sumSubs.
	sums      []*Summarizer
	sumSubs   []*nats.Subscription
	electedAt time.Time // when the election was last read (run goroutine)

	life lifecycle.Guard
	stop chan struct{}
	wg   sync.WaitGroup
}

// SyncSubject is where a watcher in idc on the host of node asks the
// publishers of a tier to re-send their state at once (after subscribing)
// instead of at their next heartbeat: the host tier asks its own node, the
// IDC tier the nodes of its IDC, the global tier every node.
func SyncSubject(t Tier, idc, node string) string {
	switch t {
	case TierHost:
		return "blsync.h." + idc + "." + node
	case TierIDC:
		return "blsync.i." + idc
	}
	return "blsync.g"
}

// NewPublisher checks cfg and returns a publisher that will send on nc.
func NewPublisher(nc *nats.Conn, cfg PublisherConfig) (*Publisher, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("backlog: publisher config: %w", err)
	}
	plan := NewPlanner(PlannerConfig{IDC: cfg.IDC, Node: cfg.Node, NATSClient: cfg.NATSClient,
		Incarnation: uint64(cfg.Now().UnixNano()), Policies: cfg.Policies})
	p := &Publisher{cfg: cfg, nc: nc, plan: plan}
	p.life.Name = "backlog: publisher"
	return p, nil
}

// Start begins publishing and answering sync requests.
func (p *Publisher) Start(ctx context.Context) error {
	return p.life.Start(ctx, p.start)
}

func (p *Publisher) start() error {
	for _, t := range Tiers {
		tier := t
		sub, err := p.nc.Subscribe(SyncSubject(tier, p.cfg.IDC, p.cfg.Node), func(*nats.Msg) {
			p.mu.Lock()
			p.plan.RequestSync(tier)
			for _, sum := range p.sums {
				if sum.Tier() == tier {
					sum.RequestSync()
				}
			}
			p.mu.Unlock()
		})
		if err != nil {
			p.unsubscribe()
			return fmt.Errorf("backlog: subscribe to sync requests: %w", err)
		}
		p.syncSubs = append(p.syncSubs, sub)
	}
	// The first election here, not in the loop: a node that summarizes
	// its IDC from the start does so once Start returns.
	p.electedAt = p.cfg.Now()
	p.summarizer(p.cfg.Summarize == nil || p.cfg.Summarize())
	p.stop = make(chan struct{})
	p.wg.Add(1)
	go p.run()
	return nil
}

// Stop stops publishing and waits for the loop to end (one Tick at most,
// which does not block: ctx is not needed). Idempotent; safe before Start.
func (p *Publisher) Stop(ctx context.Context) error {
	p.Kill()
	return nil
}

// Kill is Stop: a publisher has nothing to leave or drain.
func (p *Publisher) Kill() {
	p.life.Kill(func() {
		// The loop first: its Tick may (re)start the summarizer's
		// subscriptions, which unsubscribe then ends.
		close(p.stop)
		p.wg.Wait()
		p.unsubscribe()
	})
}

func (p *Publisher) unsubscribe() {
	for _, s := range p.syncSubs {
		_ = s.Unsubscribe()
	}
	p.syncSubs = nil
	p.stopSummarizer()
}

// Sent is how many notices were published on a tier.
func (p *Publisher) Sent(t Tier) uint64 { return p.sent[t].Load() }

func (p *Publisher) run() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.Poll)
	defer t.Stop()
	for {
		p.Tick()
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

// Tick observes the node once and publishes what the planner decided.
// The run loop calls it every Poll; tests may call it directly.
func (p *Publisher) Tick() {
	now := p.cfg.Now()
	levels := p.cfg.Source()
	if p.electedAt.IsZero() || now.Sub(p.electedAt) >= time.Second {
		// Gossip membership is read once a second, not every poll (and a
		// failed start of the summarizer is retried as often).
		p.electedAt = now
		p.summarizer(p.cfg.Summarize == nil || p.cfg.Summarize())
	}
	p.mu.Lock()
	notices := p.plan.Tick(levels, now)
	for _, n := range notices {
		p.publish(n)
	}
	p.publishSummaries(now)
	p.mu.Unlock()
}

func (p *Publisher) publish(n Notice) {
	b, err := proto.Marshal(n.Msg)
	if err != nil {
		p.cfg.Logger.Error("encode backlog notice", "err", err)
		return
	}
	if err := p.nc.Publish(Subject(n.Tier, p.cfg.IDC, p.cfg.Node, n.Msg.Queue), b); err != nil {
		p.cfg.Logger.Debug("backlog notice not published", "err", err)
		return
	}
	p.sent[n.Tier].Add(1)
}

// summarizer starts the IDC's summarizers (one per SummaryTiers) when the
// node is elected, and stops them when it no longer is.
func (p *Publisher) summarizer(elected bool) {
	p.mu.Lock()
	running := len(p.sumSubs) > 0
	p.mu.Unlock()
	switch {
	case elected && !running:
		var sums []*Summarizer
		var subs []*nats.Subscription
		for _, t := range SummaryTiers {
			cfg := p.cfg.Summary
			cfg.Tier, cfg.IDC, cfg.Node, cfg.Incarnation = t, p.cfg.IDC, p.cfg.Node, uint64(p.cfg.Now().UnixNano())
			sum := NewSummarizer(cfg)
			sub, err := p.nc.Subscribe(Root+"."+t.Token()+"."+p.cfg.IDC+".>", func(m *nats.Msg) {
				addr, err := ParseSubject(m.Subject)
				var n backlogpb.Notice
				if err == nil {
					err = proto.Unmarshal(m.Data, &n)
				}
				if err != nil || addr.IDC != n.Idc || addr.Node != n.Node || addr.Queue != n.Queue {
					return
				}
				p.mu.Lock()
				sum.Observe(&n, p.cfg.Now())
				p.mu.Unlock()
			})
			if err != nil {
				p.cfg.Logger.Warn("backlog summarizer: subscribe", "err", err)
				for _, s := range subs {
					_ = s.Unsubscribe()
				}
				return
			}
			sums, subs = append(sums, sum), append(subs, sub)
		}
		p.mu.Lock()
		p.sums, p.sumSubs = sums, subs
		p.mu.Unlock()
		// Ask the IDC's nodes for their state.
		for _, t := range SummaryTiers {
			_ = p.nc.Publish(SyncSubject(t, p.cfg.IDC, p.cfg.Node), nil)
		}
		p.cfg.Logger.Info("backlog summarizer of the IDC", "idc", p.cfg.IDC)
	case !elected && running:
		p.stopSummarizer()
	}
}

func (p *Publisher) stopSummarizer() {
	p.mu.Lock()
	subs := p.sumSubs
	p.sums, p.sumSubs = nil, nil
	p.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
}

// publishSummaries publishes what the summarizers decided (under mu).
func (p *Publisher) publishSummaries(now time.Time) {
	for _, sum := range p.sums {
		for _, s := range sum.Tick(now) {
			b, err := proto.Marshal(s)
			if err != nil {
				p.cfg.Logger.Error("encode backlog summary", "err", err)
				continue
			}
			if err := p.nc.Publish(SummarySubject(sum.Tier(), s.Idc, int(s.Shard)), b); err != nil {
				p.cfg.Logger.Debug("backlog summary not published", "err", err)
				continue
			}
			p.summaries.Add(1)
		}
	}
}

// ForgetNode drops a node of the IDC from the summaries at once (gossip
// says it failed or left), if this node is the IDC's summarizer.
func (p *Publisher) ForgetNode(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, sum := range p.sums {
		sum.Forget(node)
	}
}

// Summaries is how many summaries this node published as its IDC's
// summarizer.
func (p *Publisher) Summaries() uint64 { return p.summaries.Load() }
