package mqnode

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/ratelog"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/internal/testlog"
)

// dialAs connects to url over TCP with the credentials of role.
func dialAs(t *testing.T, set *secrets.Set, url string, role secrets.Role) *Client {
	t.Helper()
	opts, err := set.ClientOptions(role)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(ctxT(t), url, opts...)
	if err != nil {
		t.Fatalf("dial as %s: %v", role, err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestSecureNodeRolesAndRefusals(t *testing.T) {
	set := secretstest.Set(t)
	n, own := startNode(t, Config{Listen: "127.0.0.1:0", Security: set})
	url := n.ClientURL()
	ctx := ctxT(t)

	// The node's own in-process connection works (role node).
	if _, err := own.Info(ctx); err != nil {
		t.Fatalf("own connection: %v", err)
	}
	// Anonymous, plain and TLS-without-credentials connections are refused.
	if nc, err := nats.Connect(url, nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("anonymous plain connection accepted")
	}
	if nc, err := nats.Connect(url, nats.Secure(set.ClientTLS()), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("TLS connection without credentials accepted")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("refusal does not say why: %v", err)
	}

	prod := dialAs(t, set, url, secrets.RoleProducer)
	wrk := dialAs(t, set, url, secrets.RoleWorker)
	adm := dialAs(t, set, url, secrets.RoleAdmin)
	if _, err := prod.Enqueue(ctx, "jobs", &EnqueueItem{Payload: []byte("x")}); err != nil {
		t.Fatalf("producer enqueue: %v", err)
	}
	ds, _, err := wrk.Pull(ctx, PullRequest{Queue: "jobs", MaxTasks: 1})
	if err != nil || len(ds) != 1 {
		t.Fatalf("worker pull: %v %v", ds, err)
	}
	if _, err := wrk.AckOne(ctx, &AckItem{Receipt: ds[0].Receipt}); err != nil {
		t.Fatalf("worker ack: %v", err)
	}
	if _, _, err := adm.Stats(ctx, ""); err != nil {
		t.Fatalf("admin stats: %v", err)
	}
	denied := []struct {
		what string
		call func() error
	}{
		{"producer pull", func() error { _, _, err := prod.Pull(ctx, PullRequest{Queue: "jobs"}); return err }},
		{"producer stats", func() error { _, _, err := prod.Stats(ctx, ""); return err }},
		{"producer dlq purge", func() error { _, err := prod.DLQPurge(ctx, "jobs"); return err }},
		{"worker enqueue", func() error { _, err := wrk.Enqueue(ctx, "jobs", &EnqueueItem{Payload: []byte("x")}); return err }},
		{"worker dlq list", func() error { _, _, err := wrk.DLQList(ctx, "jobs", "", 10); return err }},
	}
	for _, d := range denied {
		start := time.Now()
		err := d.call()
		if !errors.Is(err, ErrPermissionDenied) {
			t.Errorf("%s: %v, want ErrPermissionDenied", d.what, err)
		} else if CodeOf(err).String() != "PERMISSION_DENIED" {
			t.Errorf("%s: code %s", d.what, CodeOf(err))
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("%s: refused after %s, want at once", d.what, took)
		}
	}
	// No role but node may answer requests (a rogue responder) or forge
	// backlog; each probe on a fresh connection (errors are sticky).
	for _, role := range []secrets.Role{secrets.RoleProducer, secrets.RoleWorker, secrets.RoleAdmin} {
		for _, probe := range []string{"sub mq.>", "sub mq.local.n1.pull", "pub bl.h.local.n1.jobs", "pub thr.usage.local.n1"} {
			nc := dialAs(t, set, url, role).Conn()
			verb, subj, _ := strings.Cut(probe, " ")
			if verb == "sub" {
				_, err = nc.SubscribeSync(subj)
			} else {
				err = nc.Publish(subj, []byte("forged"))
			}
			if err == nil {
				err = nc.Flush()
			}
			if err == nil {
				err = nc.LastError()
			}
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("%s: %s allowed (%v)", role, probe, err)
			}
		}
	}
}

// TestReleaseWorker: a worker's death releases only the leases it took as
// that mesh member; the same worker id under another membership (a member
// reusing the id, or no membership) releases nothing.
func TestReleaseWorker(t *testing.T) {
	n, err := New(Config{Name: "n1", DataDir: t.TempDir(), Listen: ListenNone, Logger: testLogger(t), Throttle: testlog.NoCPUThrottle})
	if err != nil {
		t.Fatal(err)
	}
	n.WorkerMember = func(id string) string {
		if id == "dead-worker" {
			return "worker:local:dead-worker@127.0.0.1:7001"
		}
		return ""
	}
	if err := n.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	c, err := n.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	enqueueN(t, c, "q", 4)
	ds, _, err := c.Pull(ctx, PullRequest{Queue: "q", MaxTasks: 2, WorkerID: "dead-worker", Lease: time.Hour})
	if err != nil || len(ds) != 2 {
		t.Fatal(ds, err)
	}
	if ds, _, err = c.Pull(ctx, PullRequest{Queue: "q", MaxTasks: 1, WorkerID: "stranger", Lease: time.Hour}); err != nil || len(ds) != 1 {
		t.Fatal(ds, err)
	}
	for _, m := range []string{"", "worker:other:dead-worker@127.0.0.1:7001", "worker:local:dead-worker@10.9.9.9:7001"} {
		if got := n.ReleaseWorker("dead-worker", m); got != 0 {
			t.Fatalf("member %q released %d leases of another membership", m, got)
		}
	}
	if got := n.ReleaseWorker("stranger", ""); got != 0 {
		t.Fatalf("a worker without membership had %d leases released", got)
	}
	if got := n.ReleaseWorker("dead-worker", "worker:local:dead-worker@127.0.0.1:7001"); got != 2 {
		t.Fatalf("released %d leases, want 2", got)
	}
	eventually(t, 5*time.Second, "released tasks ready", func() bool {
		st := queueStats(t, c, "q")
		return st.Ready == 3 && st.Leased == 1
	})
}

// TestViolationLogOncePerClientPerMinute: a client hammering a denied
// subject is logged once a minute, with the count suppressed meanwhile.
func TestViolationLogOncePerClientPerMinute(t *testing.T) {
	v := ratelog.Limiter{Every: time.Minute}
	t0 := time.Unix(1000, 0)
	if ok, _ := v.Allow("cid:1", t0); !ok {
		t.Fatal("first violation not logged")
	}
	for i := 1; i <= 50; i++ {
		if ok, _ := v.Allow("cid:1", t0.Add(time.Duration(i)*time.Second)); ok {
			t.Fatalf("violation %d within the minute logged", i)
		}
	}
	if ok, _ := v.Allow("cid:2", t0.Add(time.Second)); !ok {
		t.Fatal("another client's first violation not logged")
	}
	ok, suppressed := v.Allow("cid:1", t0.Add(61*time.Second))
	if !ok || suppressed != 50 {
		t.Fatalf("after a minute: logged %v, suppressed %d, want true, 50", ok, suppressed)
	}
}

func TestNATSLoggerRateLimitsViolations(t *testing.T) {
	var buf strings.Builder
	g := natsLogger{l: slog.New(slog.NewTextHandler(&buf, nil)), violations: &ratelog.Limiter{Every: time.Minute}}
	for i := 0; i < 5; i++ {
		g.Errorf("%s - Publish Violation - Subject %q", "127.0.0.1:5000 - cid:7", "mq.a.b.dlq")
		g.Errorf("%s - Subscription Violation - Subject %q", "127.0.0.1:5001 - cid:8", "mq.>")
	}
	g.Errorf("some other error")
	out := buf.String()
	if n := strings.Count(out, "PERMISSION_DENIED"); n != 2 {
		t.Fatalf("%d violation lines for 2 clients x 5, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "some other error") {
		t.Fatal("other errors are not logged")
	}
}

// TestSetSecurityRotatesRoleKeys: a new producer key added to roles.json
// works once the node reloads its secrets, without a restart; once the old
// key is removed, it is refused.
func TestSetSecurityRotatesRoleKeys(t *testing.T) {
	dir := secretstest.Dir(t)
	set, err := secrets.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := startNode(t, Config{Listen: "127.0.0.1:0", Security: set})
	url := n.ClientURL()
	oldProd := dialAs(t, set, url, secrets.RoleProducer)

	// A second secrets dir provides the new producer key pair.
	newSet, err := secrets.Load(secretstest.Dir(t))
	if err != nil {
		t.Fatal(err)
	}
	rolesPath := filepath.Join(dir, secrets.FileRoles)
	writeRoles := func(producers []string) {
		roles := map[string][]string{}
		for _, r := range secrets.Roles {
			roles[string(r)] = set.RoleKeys(r)
		}
		roles["producer"] = producers
		b, _ := json.Marshal(roles)
		if err := os.WriteFile(rolesPath, b, 0o600); err != nil {
			t.Fatal(err)
		}
		reloaded, err := secrets.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.SetSecurity(reloaded); err != nil {
			t.Fatal(err)
		}
	}
	newOpts := func() []nats.Option {
		o, err := newSet.ClientOptions(secrets.RoleProducer)
		if err != nil {
			t.Fatal(err)
		}
		// The new seed, verified against this mesh's CA.
		return append(o, nats.Secure(set.ClientTLS()))
	}
	if c, err := Dial(ctxT(t), url, newOpts()...); err == nil {
		c.Close()
		t.Fatal("a key not in roles.json connected")
	}
	writeRoles(append(set.RoleKeys(secrets.RoleProducer), newSet.RoleKeys(secrets.RoleProducer)...))
	c, err := Dial(ctxT(t), url, newOpts()...)
	if err != nil {
		t.Fatalf("the added key after reload: %v", err)
	}
	defer c.Close()
	if _, err := c.Enqueue(ctxT(t), "q", &EnqueueItem{Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := oldProd.Enqueue(ctxT(t), "q", &EnqueueItem{Payload: []byte("x")}); err != nil {
		t.Fatalf("the old key during the overlap: %v", err)
	}
	writeRoles(newSet.RoleKeys(secrets.RoleProducer))
	if c, err := Dial(ctxT(t), url, append(mustOpts(t, set, secrets.RoleProducer), nats.MaxReconnects(0))...); err == nil {
		c.Close()
		t.Fatal("the removed key still connects")
	}
	eventually(t, 5*time.Second, "the removed key's connection closed", func() bool { return oldProd.Conn().IsClosed() || !oldProd.Conn().IsConnected() })
}

func mustOpts(t *testing.T, set *secrets.Set, r secrets.Role) []nats.Option {
	o, err := set.ClientOptions(r)
	if err != nil {
		t.Fatal(err)
	}
	return o
}
