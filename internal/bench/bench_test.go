package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// childEnv makes the test binary act as `bench serve` (see TestMain).
const childEnv = "MQMESH_BENCH_TEST_CHILD"

// TestMain lets the test binary serve as the benchmark's child process: the
// test binary is not the mqmesh binary, so testLauncher re-executes it with
// childEnv set and the serve flags as arguments.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		cmd := NewCommand()
		cmd.SetArgs(append([]string{"serve"}, os.Args[1:]...))
		if err := cmd.Execute(); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m,
		// `bench backlog` runs nodes in this process: Badger's and
		// ristretto's process-wide goroutines outlive a DB, and memberlist's
		// probe and suspicion timers may fire once more after Shutdown.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).suspectNode.func1"),
		// bench remote's delayed link: toxiproxy's latency toxic can stay
		// blocked on a channel send for a moment after its proxy stopped
		// (as sim's tests note).
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"),
	)
}

func testLauncher(args []string) (*exec.Cmd, error) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	return cmd, nil
}

// runCommand runs `bench <args>` with the test launcher and returns stdout
// and stderr.
func runCommand(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := newCommand(testLauncher)
	cmd.SetArgs(args)
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return stdout.String(), stderr.String(), err
}

func TestNodeJSONBothPairs(t *testing.T) {
	dir := t.TempDir()
	out, logs, err := runCommand(t, "node", "--count", "2000", "--batch", "50", "--producers", "4",
		"--consumers", "2", "--json", "--dir", dir, "--tune=false", "--peers", "jetstream")
	if err != nil {
		t.Fatalf("bench node: %v\nstderr:\n%s", err, logs)
	}
	r := decodeStrict[Report](t, out)
	if r.Schema != ReportSchema || !r.OK || r.Config.Count != 2000 || r.Config.Batch != 50 {
		t.Fatalf("report header: %+v", r)
	}
	if len(r.Pairs) != 2 || r.Pairs[0].Pair != "async" || r.Pairs[1].Pair != "fsync" {
		t.Fatalf("pairs: %+v", r.Pairs)
	}
	wantDur := map[string][2]string{"async": {"async", "default"}, "fsync": {"fsync", "sync_always"}}
	for _, p := range r.Pairs {
		for i, res := range []Result{p.MQNode, p.JetStream} {
			want := [2]string{"mqnode", "jetstream"}[i]
			if res.Peer != want || res.Durability != wantDur[p.Pair][i] {
				t.Errorf("%s: peer %q durability %q", p.Pair, res.Peer, res.Durability)
			}
			if !res.OK || res.Error != "" || res.Enqueued != 2000 || res.Delivered != 2000 || res.Lost != 0 {
				t.Errorf("%s %s: %+v", p.Pair, res.Peer, res)
			}
			if res.EnqueuePerS <= 0 || res.DrainPerS <= 0 || res.EndToEndS <= 0 {
				t.Errorf("%s %s: figures missing: %+v", p.Pair, res.Peer, res)
			}
			if procAvailable() && (res.PeakRSSMiB <= 0 || res.FinalRSSMiB <= 0) {
				t.Errorf("%s %s: RSS missing: %+v", p.Pair, res.Peer, res)
			}
		}
		if p.Ratio == nil || p.Ratio.EnqueuePerS <= 0 || p.Ratio.DrainPerS <= 0 || p.Ratio.EndToEndS <= 0 {
			t.Errorf("%s: ratio %+v", p.Pair, p.Ratio)
		}
		// --secure (the default) runs mqnode with TLS and auth beside it.
		if sec := p.MQNodeSecure; sec == nil || sec.Peer != "mqnode+tls" || !sec.OK || sec.Delivered != 2000 {
			t.Errorf("%s: mqnode+tls %+v", p.Pair, sec)
		}
		if p.SecureCost == nil || p.SecureCost.EndToEndS <= 0 {
			t.Errorf("%s: secure cost %+v", p.Pair, p.SecureCost)
		}
	}
	if r.Backlogs != nil {
		t.Errorf("backlog ran without --backlog-steps")
	}
	if !strings.Contains(logs, "bench: mqnode async: enqueued 2000 tasks") {
		t.Errorf("no progress on stderr:\n%s", logs)
	}
	assertEmptyDir(t, dir)
}

// TestNodeTunesEachPeer runs the tuning grids on tiny workloads: every
// peer's grid runs all its stages, and each pairing runs the peer's best
// drive. River runs when PostgreSQL is installed or installable.
func TestNodeTunesEachPeer(t *testing.T) {
	dir := t.TempDir()
	out, logs, err := runCommand(t, "node", "--count", "600", "--tune-count", "300", "--pairs", "async", "--json", "--dir", dir)
	if err != nil {
		t.Fatalf("bench node: %v\nstderr:\n%s", err, logs)
	}
	r := decodeStrict[Report](t, out)
	if !r.OK || !r.Config.Tune || len(r.Pairs) != 1 {
		t.Fatalf("report: %s", out)
	}
	p := r.Pairs[0]
	if p.River == nil {
		t.Fatal("no river result")
	}
	peers := []Result{p.MQNode, p.JetStream}
	if p.River.Skipped != "" {
		t.Logf("river skipped: %s", p.River.Skipped)
	} else {
		peers = append(peers, *p.River)
	}
	for _, res := range peers {
		stages := map[string]int{}
		var best GridRun
		for _, g := range r.Grid {
			if g.Peer != res.Peer {
				continue
			}
			if !g.OK || g.Count != 300 || g.EnqueuePerS <= 0 || g.DrainPerS <= 0 {
				t.Errorf("%s grid run: %+v", res.Peer, g)
			}
			stages[g.Stage]++
			if g.Stage != stageEnqueue && g.DrainPerS > best.DrainPerS {
				best = g
			}
		}
		if stages[stageEnqueue] < 2 || stages[stageDrain1] < 3 || (res.Peer != peerRiver && stages[stageDrain2] < 4) {
			t.Errorf("%s grid stages: %v", res.Peer, stages)
		}
		if res.Drive != best.Drive {
			t.Errorf("%s ran drive %s, the grid's best drain was %s", res.Peer, res.Drive, best.Drive)
		}
		if !res.OK || res.Delivered != 600 {
			t.Errorf("%s: %+v", res.Peer, res)
		}
	}
	if p.JetStream.Drive.Enqueue != enqueuePubAsync || (p.MQNode.Drive.Pull != pullMQNode && p.MQNode.Drive.Pull != pullPuller) {
		t.Errorf("drives: %+v %+v", p.MQNode.Drive, p.JetStream.Drive)
	}
	assertEmptyDir(t, dir)
}

func TestNodeTableAndBacklog(t *testing.T) {
	dir := t.TempDir()
	out, logs, err := runCommand(t, "node", "--count", "500", "--pairs", "async", "--tune=false", "--peers", "jetstream",
		"--backlog-steps", "300,900", "--dir", dir)
	if err != nil {
		t.Fatalf("bench node: %v\nstderr:\n%s", err, logs)
	}
	for _, want := range []string{"enqueue/s", "drain/s", "end-to-end s", "peak RSS MiB", "mqnode/jetstream",
		"500/500 ok", "mqnode+tls", "secure cost", "backlog growth, mqnode durability async", "900"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "fsync") && strings.Contains(out, "sync_always") {
		t.Errorf("--pairs async ran the fsync pairing:\n%s", out)
	}
	assertEmptyDir(t, dir)
}

func TestBacklogJSON(t *testing.T) {
	out, logs, err := runCommand(t, "node", "--pairs", "none", "--backlog-steps", "200,600", "--backlog-peers", "mqnode,jetstream",
		"--json", "--dir", t.TempDir())
	if err != nil {
		t.Fatalf("bench node: %v\nstderr:\n%s", err, logs)
	}
	var r Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Pairs) != 0 || len(r.Backlogs) != 2 || !r.OK {
		t.Fatalf("report: %s", out)
	}
	if bl := r.Backlogs[0]; bl.DrainTasks != 200 || bl.EmptyDrainPerS <= 0 || bl.DeepDrainPerS <= 0 || bl.DrainRatio <= 0 {
		t.Errorf("mqnode drains: %+v", bl)
	}
	for j, peer := range []string{"mqnode", "jetstream"} {
		bl := r.Backlogs[j]
		if bl.Peer != peer || len(bl.Steps) != 2 {
			t.Fatalf("backlog %d: %+v", j, bl)
		}
		for i, want := range []int64{200, 600} {
			s := bl.Steps[i]
			if s.Backlog != want || s.EnqueuePerS <= 0 || (procAvailable() && s.RSSMiB <= 0) {
				t.Errorf("%s step %d: %+v", peer, i, s)
			}
		}
	}
}

func TestNodeRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"node", "--size", "4"},
		{"node", "--pairs", "bogus"},
		{"node", "--count", "0"},
		{"node", "--backlog-steps", "5,3"},
		{"node", "--pairs", "none"},
		{"node", "--backlog-peers", "redis", "--backlog-steps", "10"},
		{"node", "--pairs", "repl", "--repl-rounds", "0"},
	} {
		if _, _, err := runCommand(t, args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// A child that never prints its URL is killed, and the error says so.
func TestChildThatFailsToStart(t *testing.T) {
	launch := func([]string) (*exec.Cmd, error) {
		cmd := exec.Command(os.Args[0], "--peer", "nonsense")
		cmd.Env = append(os.Environ(), childEnv+"=1")
		return cmd, nil
	}
	_, err := startChild(context.Background(), launch, serveOptions{peer: "x", durability: durAsync, dir: t.TempDir()}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("err = %v", err)
	}
}

// Closing a child's stdin makes it shut down and exit cleanly.
func TestChildStopsOnStdinEOF(t *testing.T) {
	var logs bytes.Buffer
	c, err := startChild(context.Background(), testLauncher, serveOptions{peer: peerJetStream, durability: durAsync, dir: t.TempDir()}, &logs)
	if err != nil {
		t.Fatalf("start: %v\n%s", err, logs.String())
	}
	if _, err := readMemory(c.pid); procAvailable() && err != nil {
		t.Fatal(err)
	}
	if err := c.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, logs.String())
	}
	if c.cmd.ProcessState == nil || !c.cmd.ProcessState.Exited() {
		t.Fatalf("child still running: %v", c.cmd.ProcessState)
	}
}

// A run cancelled in the middle of a phase fails with the cancellation,
// stops its child and leaves no data behind.
func TestCancelledRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	var (
		mu   sync.Mutex
		cmds []*exec.Cmd
	)
	launch := func(args []string) (*exec.Cmd, error) {
		cmd, err := testLauncher(args)
		mu.Lock()
		cmds = append(cmds, cmd)
		mu.Unlock()
		return cmd, err
	}
	var logs bytes.Buffer
	o := &nodeOptions{count: 5_000_000, tuneCount: 1, tuneCountFsync: 1, size: 256, batch: 100, producers: 2, consumers: 1, pairs: []string{durAsync},
		dir: dir, backlogDurability: durAsync, lease: 30 * time.Second, stall: time.Minute,
		runner: runner{launch: launch, stdout: &bytes.Buffer{},
			// Cancel at the first progress line of the enqueue phase.
			stderr: &cancelOnWrite{w: &logs, cancel: cancel, after: "mqnode async enqueue "}}}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	r, err := runNode(ctx, o)
	if err == nil || r == nil || r.OK {
		t.Fatalf("runNode after cancel: err %v, report %+v", err, r)
	}
	if !strings.Contains(r.Pairs[0].MQNode.Error, "context canceled") {
		t.Errorf("mqnode error %q, want the cancellation\n%s", r.Pairs[0].MQNode.Error, logs.String())
	}
	if len(cmds) == 0 {
		t.Fatal("no child started")
	}
	for _, c := range cmds {
		if c.ProcessState == nil {
			t.Errorf("child %v not reaped", c.Args)
		}
	}
	assertEmptyDir(t, dir)
}

// cancelOnWrite passes writes on and calls cancel once one contains after.
type cancelOnWrite struct {
	mu     sync.Mutex
	w      io.Writer
	cancel func()
	after  string
}

func (c *cancelOnWrite) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if bytes.Contains(p, []byte(c.after)) {
		c.cancel()
	}
	return c.w.Write(p)
}

// decodeStrict decodes a JSON report and fails on fields R does not have.
func decodeStrict[R any](t *testing.T, out string) R {
	t.Helper()
	var r R
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("decode report: %v\n%s", err, out)
	}
	return r
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("data left behind in %s: %v", dir, entries)
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestLatencyReportsEveryPeerAndRate(t *testing.T) {
	dir := t.TempDir()
	out, logs, err := runCommand(t, "latency", "--duration", "1s", "--warmup", "200ms", "--max-count", "2000",
		"--levels", "25,50", "--rates", "300", "--slots", "8", "--json", "--dir", dir)
	if err != nil {
		t.Fatalf("bench latency: %v\nstderr:\n%s", err, logs)
	}
	r := decodeStrict[LatencyReport](t, out)
	if r.Schema != LatencySchema || !r.OK || len(r.Peers) != 2 {
		t.Fatalf("report: %s", out)
	}
	for i, p := range r.Peers {
		if want := []string{peerMQNode, peerJetStream}[i]; p.Peer != want || p.MaxPerS <= 0 || len(p.Runs) != 3 {
			t.Fatalf("peer %d: %+v", i, p)
		}
		for j, run := range p.Runs {
			wantRate := []float64{p.MaxPerS * 0.25, p.MaxPerS * 0.5, 300}[j]
			if run.Offered < wantRate*0.99 || run.Offered > wantRate*1.01 || run.Level != []int{25, 50, 0}[j] {
				t.Errorf("%s run %d: offered %.0f level %d, want %.0f", p.Peer, j, run.Offered, run.Level, wantRate)
			}
			// Every task sent was handled; latencies are ordered and real.
			if run.Sent == 0 || run.Handled != run.Sent || run.Error != "" {
				t.Errorf("%s run %d: %+v", p.Peer, j, run)
			}
			for _, q := range []Percentiles{run.Start, run.Ack} {
				if q.P50 <= 0 || q.P50 > q.P99 || q.P99 > q.P999 || q.P999 > q.Max {
					t.Errorf("%s run %d: percentiles %+v", p.Peer, j, q)
				}
			}
		}
	}
	assertEmptyDir(t, dir)
}

func TestRemoteAgainstLocal(t *testing.T) {
	out, logs, err := runCommand(t, "remote", "--count", "500", "--rtts", "2ms", "--pools", "8x8", "--pipelines", "2x100",
		"--json", "--dir", t.TempDir())
	if err != nil {
		t.Fatalf("bench remote: %v\nstderr:\n%s", err, logs)
	}
	r := decodeStrict[RemoteReport](t, out)
	if r.Schema != RemoteSchema || !r.OK || len(r.Links) != 2 {
		t.Fatalf("report: %s", out)
	}
	if !r.Netns {
		t.Logf("no network namespace: %s", r.NetnsSkipped)
	}
	local, slow := r.Links[0], r.Links[1]
	if local.Name != "local" || slow.AddedRTTMs != 2 || len(local.Runs) != 2 || len(slow.Runs) != 2 {
		t.Fatalf("links: %+v", r.Links)
	}
	// The added delay is on the link the worker's connection measured (a
	// lower bound; a busy machine adds to both links).
	if slow.MeasuredRTTMs < 2 || local.MeasuredRTTMs <= 0 {
		t.Errorf("measured RTT local %.2f ms, remote %.2f ms", local.MeasuredRTTMs, slow.MeasuredRTTMs)
	}
	for _, l := range r.Links {
		for _, run := range l.Runs {
			if run.PerS <= 0 || run.VsLocal <= 0 || run.Error != "" {
				t.Errorf("%s %s: %+v", l.Name, run.Drainer, run)
			}
		}
	}
}

func TestCompareFlagsRegressions(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, r any) string {
		t.Helper()
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		p := dir + "/" + name
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	res := func(peer string, enq, drain, e2e float64) Result {
		return Result{Peer: peer, OK: true, EnqueuePerS: enq, DrainPerS: drain, EndToEndS: e2e}
	}
	base := write("base.json", Report{Schema: ReportSchema, Pairs: []Pair{{Pair: "async",
		MQNode: res("mqnode", 100_000, 100_000, 2), JetStream: res("jetstream", 50_000, 50_000, 4)}}})
	cur := write("new.json", Report{Schema: ReportSchema, Pairs: []Pair{{Pair: "async",
		// enqueue 20 % slower (flagged), drain 10 % slower (not), end to end 30 % faster.
		MQNode: res("mqnode", 80_000, 90_000, 1.4), JetStream: res("jetstream", 50_000, 50_000, 4)}}})
	out, _, err := runCommand(t, "compare", base, cur, "--json")
	if err == nil || !strings.Contains(err.Error(), "1 figures regressed") {
		t.Fatalf("compare: err %v", err)
	}
	c := decodeStrict[Comparison](t, out)
	if len(c.Regressions) != 1 || c.Regressions[0] != "node/async/mqnode/enqueue_per_s" {
		t.Fatalf("regressions: %v", c.Regressions)
	}
	for _, f := range c.Figures {
		if f.Name == "node/async/mqnode/end_to_end_s" && (f.Change < 0.29 || f.Change > 0.31 || f.Regressed) {
			t.Errorf("end to end: %+v", f)
		}
	}
	if _, _, err := runCommand(t, "compare", base, base); err != nil {
		t.Errorf("a report against itself: %v", err)
	}
	bad := write("bad.json", map[string]string{"schema": "nope"})
	if _, _, err := runCommand(t, "compare", base, bad); err == nil || !strings.Contains(err.Error(), "schema") {
		t.Errorf("unknown schema: %v", err)
	}
}
