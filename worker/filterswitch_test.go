package worker

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/testlog"
)

const (
	everythingYAML = `tiers:
  local: {subject: "bl.h.{idc}.{node}.>", min_backlog: 1}
  idc: {subject: "bl.i.{idc}.>", min_backlog: 1}
  global: {subject: "bl.g.>", min_backlog: 1}
`
	localOnlyYAML = `tiers:
  local: {subject: "bl.h.{idc}.{node}.>", min_backlog: 1}
`
)

// TestFilterSwitchStopsCrossIDCPulls: a pool helps another IDC's backlog
// through the global tier; its filter file is switched to local-only while
// that backlog persists. From the moment the reload is applied the pool
// sends no pull to the other IDC: entries of tiers no longer subscribed
// left its view at once (they used to stay until stale, probed by empty
// pulls).
func TestFilterSwitchStopsCrossIDCPulls(t *testing.T) {
	c := startCluster(t, 2, 1, 4, everythingFilter())
	a, b := c.hosts[0], c.hosts[1]
	ctx := context.Background()
	must(t, a.pool.Stop(ctx)) // replaced by a pool on a filter file
	path := filepath.Join(t.TempDir(), "filter.yaml")
	must(t, os.WriteFile(path, []byte(everythingYAML), 0o600))
	nc := c.mesh.MustConnect(t, c.mesh.Node(a.name), secrets.RoleWorker)
	p, err := New(nc, Config{ID: "pool-file-" + a.name, IDC: a.idc, Host: a.name, Node: a.name, Slots: 8, FilterFile: path,
		Policy: PolicyConfig{CrossIDCAlways: true},
		Mesh:   c.mesh.WorkerMesh(), Logger: testlog.NewLevel(t, 4)})
	must(t, err)
	must(t, p.Handle("push", c.pushHandler(a)))
	must(t, p.Start(ctx))
	t.Cleanup(func() { _ = p.Stop(context.Background()) })

	// b's own pool is 50× slow: a backlog builds up on b for a to help with.
	b.slowdown.Store(50)
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		c.load(100, 8*time.Second, b)
	}()
	eventually(t, 15*time.Second, "the pool in idcA to pull from idcB", func() bool { return p.Stats().Pulls[OtherIDC] > 0 })

	must(t, os.WriteFile(path, []byte(localOnlyYAML), 0o600))
	eventually(t, 10*time.Second, "the filter file to be reloaded", func() bool { return len(p.watcher.Filters().Tiers) == 1 })
	switched := p.Stats()
	<-loadDone // b's backlog stays, and grows, for the rest of the load
	if c.backlog() == 0 {
		t.Fatal("idcB has no backlog: the test proves nothing")
	}
	end := p.Stats()
	t.Logf("pulls to the other IDC: %d before the switch (%d empty), %d after; idcB backlog %d",
		switched.Pulls[OtherIDC], switched.EmptyPulls[OtherIDC], end.Pulls[OtherIDC]-switched.Pulls[OtherIDC], c.backlog())
	if n := end.Pulls[OtherIDC] - switched.Pulls[OtherIDC]; n != 0 {
		t.Fatalf("%d pulls to the other IDC after the filter switched to local-only", n)
	}
	for _, e := range p.View().Entries() {
		if e.IDC != a.idc {
			t.Fatalf("view still holds an entry of another IDC after the switch: %+v", e)
		}
	}
}
