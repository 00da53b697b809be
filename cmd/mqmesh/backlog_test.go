package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

// startBacklogNode starts a node with a backlog publisher (default
// policies) and enqueues ready tasks on queue; it returns the node's URL.
func startBacklogNode(t *testing.T, queue string, ready int) string {
	t.Helper()
	n, url := startNode(t)
	pub, pubConn, err := mesh.StartPublisher(context.Background(), n, [backlog.NumTiers]backlog.TierPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before the node stops
		pub.Kill()
		pubConn.Close()
	})
	items := make([]*mqnode.EnqueueItem, ready)
	for i := range items {
		items[i] = &mqnode.EnqueueItem{Payload: []byte("x")}
	}
	if _, err := nodeClient(t, n).Enqueue(ctxT(t), queue, items...); err != nil {
		t.Fatal(err)
	}
	return url
}

// backlogCLI runs `backlog <args>` (the command tree of backlog.go alone, so
// the test does not depend on the root's list) and returns stdout and the
// error.
func backlogCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := newBacklogCommand()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(ctxT(t))
	if err != nil {
		t.Logf("backlog %s: %v\nstderr: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), err
}

// mustBacklogCLI runs a command line that must succeed.
func mustBacklogCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := backlogCLI(t, args...)
	if err != nil {
		t.Fatalf("backlog %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// watchUntil runs `backlog watch --once --json` with args until cond holds
// for its output (the broadcast is asynchronous), and returns that output.
func watchUntil(t *testing.T, what string, cond func(backlogWatchJSON) bool, args ...string) backlogWatchJSON {
	t.Helper()
	args = append([]string{"watch", "--once", "--json", "--interval", "200ms"}, args...)
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := mustBacklogCLI(t, args...)
		if strings.Count(out, "\n") != 1 {
			t.Fatalf("--once --json printed %q, want one line", out)
		}
		var got backlogWatchJSON
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("decode %q: %v", out, err)
		}
		if cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last output: %s", what, out)
		}
	}
}

// entry returns the view's entry of queue, if any.
func (s backlogWatchJSON) entry(queue string) (backlogEntryJSON, bool) {
	for _, e := range s.Entries {
		if e.Queue == queue {
			return e, true
		}
	}
	return backlogEntryJSON{}, false
}

func TestBacklogWatchShowsTheNodesQueue(t *testing.T) {
	url := startBacklogNode(t, "jobs", 100)
	localOnly := writeFile(t, "local.yaml", "tiers:\n  local:\n    subject: bl.h.{idc}.{node}.>\n    min_backlog: 1\n")

	got := watchUntil(t, "jobs with 100 ready on the local tier", func(s backlogWatchJSON) bool {
		e, ok := s.entry("jobs")
		return ok && e.Ready == 100
	}, "--server", url, "--filter", localOnly)
	e, _ := got.entry("jobs")
	if e.IDC != "local" || e.Node != "n1" || e.Tier != "local" || e.Level == 0 || e.NATSClient == "" || e.AgeMs < 0 {
		t.Fatalf("entry %+v", e)
	}
	if got.IDC != "local" || got.Node != "n1" || got.Time.IsZero() || len(got.Entries) != 1 {
		t.Fatalf("watch output %+v", got)
	}
	if got.Notices.Local == 0 || got.Notices.IDC != 0 || got.Notices.Global != 0 {
		t.Fatalf("notices %+v: want local ones only (local-only filter)", got.Notices)
	}

	// The default filters (local and IDC tiers) show it too: 100 ready is
	// above the IDC tier's threshold, so either tier may have the freshest
	// notice.
	got = watchUntil(t, "jobs with 100 ready (default filters)", func(s backlogWatchJSON) bool {
		e, ok := s.entry("jobs")
		return ok && e.Ready == 100
	}, "--server", url)
	if e, _ := got.entry("jobs"); e.Tier != "local" && e.Tier != "idc" {
		t.Fatalf("entry %+v", e)
	}

	// As a worker of another node of the IDC: the local tier names that
	// node, so n1's queue comes on the IDC tier only.
	got = watchUntil(t, "jobs on the idc tier for a worker of n2", func(s backlogWatchJSON) bool {
		e, ok := s.entry("jobs")
		return ok && e.Ready == 100
	}, "--server", url, "--node", "n2")
	if e, _ := got.entry("jobs"); e.Tier != "idc" || got.Node != "n2" || got.Notices.Local != 0 {
		t.Fatalf("worker of n2: %+v", got)
	}

	// The table, once the entry is in (a fresh watcher hears it by sync).
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := mustBacklogCLI(t, "watch", "--once", "--interval", "200ms", "--server", url, "--filter", localOnly)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) < 2 || !strings.Contains(lines[0], "worker local/n1") || !strings.HasPrefix(lines[1], "IDC") {
			t.Fatalf("table:\n%s", out)
		}
		if len(lines) == 3 {
			if f := strings.Fields(lines[2]); f[2] != "jobs" || f[3] != "local" || f[4] != "100" {
				t.Fatalf("table row %q", lines[2])
			}
			break
		}
		if lines[2] != "(no backlog in view)" || time.Now().After(deadline) {
			t.Fatalf("table:\n%s", out)
		}
	}
}

// Without --once the command prints a table per interval, separated by a
// blank line when stdout is not a terminal, until its context ends.
func TestBacklogWatchLiveUntilStopped(t *testing.T) {
	url := startBacklogNode(t, "jobs", 5)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	out := &cancelAfterTables{want: 3, cancel: cancel}
	cmd := newBacklogCommand()
	cmd.SetArgs([]string{"watch", "--interval", "50ms", "--server", url})
	cmd.SetOut(out)
	cmd.SetErr(&bytes.Buffer{})
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("watch stopped with %v", err)
	}
	text := out.String()
	if n := strings.Count(text, "worker local/n1"); n < 3 {
		t.Fatalf("%d tables:\n%s", n, text)
	}
	if strings.Count(text, "\n\n") < 2 || strings.Contains(text, "\x1b[") {
		t.Fatalf("tables not separated by blank lines, or screen codes on a non-terminal:\n%q", text)
	}
}

// cancelAfterTables collects output and cancels once want tables arrived.
type cancelAfterTables struct {
	mu     sync.Mutex
	b      strings.Builder
	want   int
	cancel func()
}

func (c *cancelAfterTables) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.b.Write(p)
	if strings.Count(c.b.String(), "worker local/n1") >= c.want {
		c.cancel()
	}
	return len(p), nil
}

func (c *cancelAfterTables) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

func TestBacklogWatchRefusesBadFilters(t *testing.T) {
	url := startBacklogNode(t, "jobs", 1)
	for _, tc := range []struct {
		name, file string
		args       []string
		want       []string
	}{
		{name: "missing file", want: []string{"filter file", "no such file"}},
		{name: "unknown key", file: "tiers:\n  local:\n    subjekt: bl.h.{idc}.{node}.>\n", want: []string{"filter file", "subjekt"}},
		{name: "no tiers", file: "# nothing\n", want: []string{"no tiers"}},
		{name: "wildcard in the middle", file: "tiers:\n  global:\n    subject: bl.g.a.>.x\n",
			want: []string{"filter file", "tiers.global", "'>' must be the last token"}},
		{name: "pattern of another tier", file: "tiers:\n  idc:\n    subject: bl.g.>\n", want: []string{"tiers.idc", "is of tier global"}},
		{name: "unknown tier", file: "tiers:\n  galaxy:\n    subject: bl.g.>\n", want: []string{"tiers.galaxy", "unknown tier"}},
		{name: "{node} on a worker-only host", file: "tiers:\n  local:\n    subject: bl.h.{idc}.{node}.>\n",
			args: []string{"--node", ""}, want: []string{"tiers.local", "runs no node"}},
		{name: "bad --idc", file: "tiers:\n  idc:\n    subject: bl.i.{idc}.>\n", args: []string{"--idc", "a.>"}, want: []string{"--idc"}},
		{name: "bad --interval", file: "tiers:\n  idc:\n    subject: bl.i.{idc}.>\n", args: []string{"--interval", "1ms"}, want: []string{"--interval"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := t.TempDir() + "/missing.yaml"
			if tc.file != "" {
				path = writeFile(t, "filter.yaml", tc.file)
			}
			args := append([]string{"watch", "--once", "--interval", "100ms", "--server", url, "--filter", path}, tc.args...)
			out, err := backlogCLI(t, args...)
			wantErr(t, err, tc.want...)
			if out != "" {
				t.Fatalf("printed %q on a refused filter", out)
			}
		})
	}
}
