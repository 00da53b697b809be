package mqnode

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// With security on, replay and topic changes are admin operations; a
// producer may enqueue to a topic; only nodes may publish topic sync.
func TestSecureReplayAndTopics(t *testing.T) {
	set := secretstest.Set(t)
	n, _ := startNode(t, Config{Listen: "127.0.0.1:0", Security: set, QueueDefaults: QueueConfig{KeepSettled: time.Hour}})
	url := n.ClientURL()
	ctx := ctxT(t)
	prod := dialAs(t, set, url, secrets.RoleProducer)
	wrk := dialAs(t, set, url, secrets.RoleWorker)
	adm := dialAs(t, set, url, secrets.RoleAdmin)

	if _, err := adm.TopicCreate(ctx, "orders", Subscription{Queue: "jobs"}); err != nil {
		t.Fatalf("admin topic create: %v", err)
	}
	if _, err := prod.Enqueue(ctx, TopicPrefix+"orders", &EnqueueItem{Payload: []byte("x")}); err != nil {
		t.Fatalf("producer enqueue to a topic: %v", err)
	}
	ds, _, err := wrk.Pull(ctx, PullRequest{Queue: "jobs", MaxTasks: 1})
	if err != nil || len(ds) != 1 {
		t.Fatalf("worker pull: %v %v", ds, err)
	}
	if _, err := wrk.AckOne(ctx, &AckItem{Receipt: ds[0].Receipt}); err != nil {
		t.Fatal(err)
	}
	replay := func(c *Client) error {
		_, err := c.Replay(ctx, &wirepb.ReplayRequest{Queue: "jobs", ReplayId: "r", SinceUnixMs: time.Now().Add(-time.Minute).UnixMilli()})
		return err
	}
	if err := replay(adm); err != nil {
		t.Fatalf("admin replay: %v", err)
	}
	for _, d := range []struct {
		what string
		call func() error
	}{
		{"producer replay", func() error { return replay(prod) }},
		{"worker replay", func() error { return replay(wrk) }},
		{"producer topic create", func() error { _, err := prod.TopicCreate(ctx, "t", Subscription{Queue: "q"}); return err }},
		{"worker topic delete", func() error { return wrk.TopicDelete(ctx, "orders") }},
	} {
		if err := d.call(); !errors.Is(err, ErrPermissionDenied) {
			t.Errorf("%s: %v, want ErrPermissionDenied", d.what, err)
		}
	}
	for _, role := range []secrets.Role{secrets.RoleProducer, secrets.RoleWorker, secrets.RoleAdmin} {
		nc := dialAs(t, set, url, role).Conn()
		err := nc.Publish(TopicSyncSubject, []byte("forged"))
		if err == nil {
			err = nc.Flush()
		}
		if err == nil {
			err = nc.LastError()
		}
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("%s may publish %s (%v)", role, TopicSyncSubject, err)
		}
	}
}
