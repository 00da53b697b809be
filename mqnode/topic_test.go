package mqnode

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func TestTopicFanOut(t *testing.T) {
	_, c := startNode(t, Config{})
	ctx := ctxT(t)
	if _, err := c.TopicCreate(ctx, "orders", Subscription{Queue: "billing"}, Subscription{Queue: "audit"},
		Subscription{Queue: "vip", Header: "tier", Value: "gold"}); err != nil {
		t.Fatal(err)
	}
	copies := 0
	for b := 0; b < 20; b++ {
		items := make([]*EnqueueItem, 50)
		for i := range items {
			n := b*50 + i
			h := map[string]string{"n": fmt.Sprint(n)}
			if n%4 == 0 {
				h["tier"] = "gold"
			}
			items[i] = &EnqueueItem{Payload: []byte(fmt.Sprint(n)), Headers: h}
		}
		res, err := c.Enqueue(ctx, TopicPrefix+"orders", items...)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			copies += len(r.Copies)
			if r.Id == "" || r.Id != r.Copies[0].Id {
				t.Fatalf("result %+v: id is not the first copy's", r)
			}
		}
	}
	if copies != 2250 {
		t.Fatalf("%d copies, want 2250", copies)
	}
	for q, want := range map[string]int{"billing": 1000, "audit": 1000, "vip": 250} {
		got := drainAck(t, c, q)
		if len(got) != want {
			t.Errorf("queue %s got %d tasks, want %d", q, len(got), want)
		}
		seen := map[string]bool{}
		for _, tk := range got {
			if seen[tk.Headers["n"]] || (q == "vip" && tk.Headers["tier"] != "gold") {
				t.Fatalf("queue %s: duplicate or unmatched task %v", q, tk.Headers)
			}
			seen[tk.Headers["n"]] = true
		}
	}
	// Subtasks of a streaming task may target the topic.
	enqueueN(t, c, "src", 1)
	ds, _, err := c.Pull(ctx, PullRequest{Queue: "src"})
	if err != nil || len(ds) != 1 {
		t.Fatalf("pull: %v %d", err, len(ds))
	}
	res, err := c.AckOne(ctx, &AckItem{Receipt: ds[0].Receipt, SubtaskQueue: TopicPrefix + "orders",
		Subtasks: []*EnqueueItem{{Payload: []byte("s"), Headers: map[string]string{"tier": "gold"}}}})
	if err != nil || len(res.SubtaskIds) != 3 {
		t.Fatalf("ack with topic subtasks: %v %v, want 3 ids", err, res)
	}
	for _, q := range []string{"billing", "audit", "vip"} {
		if got := drainAck(t, c, q); len(got) != 1 {
			t.Errorf("queue %s got %d subtasks, want 1", q, len(got))
		}
	}
}

func TestTopicBadInput(t *testing.T) {
	_, c := startNode(t, Config{Topics: map[string][]Subscription{"static": {{Queue: "s1"}}}})
	ctx := ctxT(t)
	if _, err := c.TopicCreate(ctx, "gold", Subscription{Queue: "vip", Header: "tier", Value: "gold"}); err != nil {
		t.Fatal(err)
	}
	item := &EnqueueItem{Payload: []byte("x")}
	cases := []struct {
		name, target string
		want         error
	}{
		{"unknown topic", TopicPrefix + "nope", ErrNotFound},
		{"no matching subscription", TopicPrefix + "gold", ErrNoSubscribers},
	}
	for _, tc := range cases {
		if _, err := c.Enqueue(ctx, tc.target, item); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// The same request with one matching task writes nothing at all.
	_, err := c.Enqueue(ctx, TopicPrefix+"gold", &EnqueueItem{Headers: map[string]string{"tier": "gold"}}, item)
	if !errors.Is(err, ErrNoSubscribers) {
		t.Fatalf("mixed batch: %v", err)
	}
	if _, qs, err := c.Stats(ctx, "vip"); err != nil || qs[0].Ready != 0 {
		t.Fatalf("a refused topic enqueue wrote tasks: %v %v", err, qs)
	}
	// Names are validated like queue names, on both sides of the wire.
	for _, bad := range []string{"a.b", "*", ""} {
		if _, err := c.Enqueue(ctx, TopicPrefix+bad, item); !errors.Is(err, ErrInvalidName) {
			t.Errorf("topic %q: got %v, want ErrInvalidName", bad, err)
		}
		if _, err := c.TopicCreate(ctx, bad, Subscription{Queue: "q"}); !errors.Is(err, ErrInvalidName) {
			t.Errorf("create %q: got %v, want ErrInvalidName", bad, err)
		}
	}
	if _, err := c.TopicCreate(ctx, "t", Subscription{Queue: "a>"}); !errors.Is(err, ErrInvalidName) {
		t.Errorf("bad subscription queue: %v", err)
	}
	if _, err := c.TopicCreate(ctx, "t"); !errors.Is(err, ErrBadRequest) {
		t.Errorf("no subscriptions: %v", err)
	}
	if _, err := c.TopicCreate(ctx, "static", Subscription{Queue: "q"}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("overriding a config topic: %v", err)
	}
	if err := c.TopicDelete(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete unknown: %v", err)
	}
	// The config topic works and is listed.
	if _, err := c.Enqueue(ctx, TopicPrefix+"static", item); err != nil {
		t.Fatal(err)
	}
	tps, err := c.Topics(ctx)
	if err != nil || len(tps) != 2 || tps[0].Name != "gold" || !tps[1].Static {
		t.Fatalf("list: %v %v", err, tps)
	}
	if err := c.TopicDelete(ctx, "gold"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enqueue(ctx, TopicPrefix+"gold", &EnqueueItem{Headers: map[string]string{"tier": "gold"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("enqueue to a deleted topic: %v", err)
	}
}

// TestTopicPropagates runs two nodes joined by a NATS route: a topic made
// on one reaches the other, and a delete made while the other was down
// reaches it when it starts again.
func TestTopicPropagates(t *testing.T) {
	cluster := func(routes ...*url.URL) func(*server.Options) {
		return func(o *server.Options) {
			o.Cluster = server.ClusterOpts{Name: "c1", Host: "127.0.0.1", Port: server.RANDOM_PORT}
			o.Routes = routes
		}
	}
	cfg := Config{Name: "a", TopicSyncInterval: time.Hour} // only changes and start-up sync
	cfg = withTestDefaults(t, cfg)
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.NATSOptions = cluster()
	if err := a.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop(context.Background()) })
	route, _ := url.Parse("nats-route://" + a.Server().ClusterAddr().String())
	bdir := t.TempDir()
	startB := func() *Node {
		b, err := New(withTestDefaults(t, Config{Name: "b", DataDir: bdir, TopicSyncInterval: time.Hour}))
		if err != nil {
			t.Fatal(err)
		}
		b.NATSOptions = cluster(route)
		if err := b.Start(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Stop(context.Background()) })
		eventually(t, 10*time.Second, "route a-b", func() bool { return b.Server().NumRoutes() > 0 })
		return b
	}
	b := startB()
	ca, _ := a.Client()
	defer ca.Close()
	cb, _ := b.Client()
	if _, err := ca.TopicCreate(ctxT(t), "orders", Subscription{Queue: "q1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "topic on b", func() bool {
		_, err := cb.Enqueue(ctxT(t), TopicPrefix+"orders", &EnqueueItem{})
		return err == nil
	})
	cb.Close()
	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := ca.TopicDelete(ctxT(t), "orders"); err != nil {
		t.Fatal(err)
	}
	b = startB()
	cb, _ = b.Client()
	defer cb.Close()
	eventually(t, 10*time.Second, "delete reaches b after its restart", func() bool {
		tps, err := cb.Topics(ctxT(t))
		return err == nil && len(tps) == 0
	})
}

// withTestDefaults fills what startNode would: temp dir, no listener, logs.
func withTestDefaults(t *testing.T, cfg Config) Config {
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Listen = "127.0.0.1:0"
	cfg.Logger = testLogger(t)
	cfg.Throttle.CPU.Disabled = true
	return cfg
}
