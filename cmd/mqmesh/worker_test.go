package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/worker"
	"github.com/mqmesh/mqmesh/worker/demo"
)

// workerRun is `mqmesh worker` running in a goroutine: its stdout lines
// and stderr are collected as they come.
type workerRun struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
	reader sync.WaitGroup

	mu     sync.Mutex
	lines  []string
	stderr bytes.Buffer
}

// runWorker starts `mqmesh worker args...`; it is stopped (its context
// cancelled) by stop, at the latest at cleanup.
func runWorker(t *testing.T, args ...string) *workerRun {
	t.Helper()
	ctx, cancel := context.WithCancel(ctxT(t))
	r := &workerRun{t: t, cancel: cancel, done: make(chan error, 1)}
	pr, pw := io.Pipe()
	root := newRootCommand()
	root.SetArgs(append([]string{"worker"}, args...))
	root.SetOut(pw)
	root.SetErr(lockedWriter{&r.mu, io.MultiWriter(t.Output(), &r.stderr)})
	r.reader.Add(1)
	go func() {
		defer r.reader.Done()
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			r.mu.Lock()
			r.lines = append(r.lines, sc.Text())
			r.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		err := root.ExecuteContext(ctx)
		pw.Close()
		r.done <- err
	}()
	t.Cleanup(func() { r.stop() })
	return r
}

// lockedWriter serializes writes (and reads of what they write to).
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var errNotStopped = errors.New("not stopped")

// stop cancels the command's context and returns its error.
func (r *workerRun) stop() error {
	r.cancel()
	return r.wait()
}

// wait waits for the command to return (a minute at most).
func (r *workerRun) wait() error {
	select {
	case err := <-r.done:
		r.done <- err // keep it for a later call
		r.reader.Wait()
		return err
	case <-time.After(time.Minute):
		return errNotStopped
	}
}

// line waits for a stdout line matching ok and returns it; it fails the
// test when the command ends first or after 30 s.
func (r *workerRun) line(what string, ok func(string) bool) string {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for seen := 0; ; {
		r.mu.Lock()
		lines := r.lines[seen:]
		seen = len(r.lines)
		r.mu.Unlock()
		for _, l := range lines {
			if ok(l) {
				return l
			}
		}
		select {
		case err := <-r.done:
			r.done <- err
			r.reader.Wait()
			r.mu.Lock()
			defer r.mu.Unlock()
			if rest := r.lines[seen:]; slices.ContainsFunc(rest, ok) {
				return rest[slices.IndexFunc(rest, ok)]
			}
			r.t.Fatalf("worker ended (%v) before printing %s; stdout:\n%s", err, what, strings.Join(r.lines, "\n"))
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s; stdout:\n%s", what, strings.Join(r.lines, "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stderrHas reports whether the command's logs contain s.
func (r *workerRun) stderrHas(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Contains(r.stderr.String(), s)
}

// jsonLine waits for a JSON line of event that satisfies ok.
func jsonLine[T any](r *workerRun, event string, ok func(T) bool) T {
	r.t.Helper()
	var v T
	r.line(event+" line", func(l string) bool {
		var ev struct{ Event string }
		if json.Unmarshal([]byte(l), &ev) != nil || ev.Event != event {
			return false
		}
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		var x T
		if err := dec.Decode(&x); err != nil {
			r.t.Fatalf("%s line %q: %v", event, l, err)
		}
		if ok == nil || ok(x) {
			v = x
			return true
		}
		return false
	})
	return v
}

func queueStats(t *testing.T, c *mqnode.Client, queue string) *mqnode.QueueStats {
	t.Helper()
	_, qs, err := c.Stats(ctxT(t), queue)
	if err != nil {
		t.Fatal(err)
	}
	return qs[0]
}

func enqueueN(t *testing.T, c *mqnode.Client, queue string, n int) {
	t.Helper()
	items := make([]*mqnode.EnqueueItem, n)
	for i := range items {
		items[i] = &mqnode.EnqueueItem{Payload: fmt.Appendf(nil, "%s-%d", queue, i)}
	}
	if _, err := c.Enqueue(ctxT(t), queue, items...); err != nil {
		t.Fatal(err)
	}
}

const sleepAndFanout = `
id: w1
slots: 8
seed: 7
queues:
  push:
    kind: sleep
    latency: {min: 1ms, max: 4ms}
  fanout:
    kind: fanout
    latency: 1ms
    fanout: {queue: push, count: 3}
`

// TestWorkerCommandProcessesAndStops: a sleep handler and a fanout handler
// on a real node; the IDC and node are learned from it; every task and
// subtask is acked; a cancelled context stops the pool gracefully.
func TestWorkerCommandProcessesAndStops(t *testing.T) {
	n, url := startNode(t)
	c := nodeClient(t, n)
	cfg := writeFile(t, "worker.yaml", sleepAndFanout)
	// --slots overrides the file's slots: 8; the file's id stays.
	w := runWorker(t, "--config", cfg, "--server", url, "--slots", "6", "--json", "--report", "20ms")

	ready := jsonLine[workerReadyJSON](w, "ready", nil)
	wantQueues := []workerQueueJSON{{Queue: "fanout", Kind: "fanout", Latency: "fixed 1ms"}, {Queue: "push", Kind: "sleep", Latency: "uniform 1ms..4ms"}}
	if ready.ID != "w1" || ready.IDC != mqnode.DefaultIDC || ready.Node != "n1" || ready.Server != url || ready.Slots != 6 || ready.Mesh || !slices.Equal(ready.Queues, wantQueues) {
		t.Fatalf("ready %+v", ready)
	}

	enqueueN(t, c, "push", 10)
	enqueueN(t, c, "fanout", 5)
	eventually(t, 30*time.Second, "tasks and subtasks acked", func() bool {
		return queueStats(t, c, "push").AckedTotal == 10+5*3 && queueStats(t, c, "fanout").AckedTotal == 5
	})
	jsonLine[workerStatsJSON](w, "stats", func(s workerStatsJSON) bool { return s.Processed.Local == 30 })

	if err := w.stop(); err != nil {
		t.Fatalf("worker did not stop cleanly: %v", err)
	}
	last := jsonLine[workerStatsJSON](w, "stopped", nil)
	if last.ID != "w1" || last.Processed != (tierCounts{Local: 30}) || last.Pulls.Local == 0 || last.Busy != 0 || last.AckErrors != 0 {
		t.Fatalf("stopped line %+v", last)
	}
	for _, q := range []string{"push", "fanout"} {
		if st := queueStats(t, c, q); st.Leased != 0 || st.Ready != 0 || st.Dead != 0 {
			t.Fatalf("queue %s after the stop: %v", q, st)
		}
	}
}

// TestWorkerCommandWorkerOnlyHost: with --node "" the pool has no node of
// its own: it hears the node's backlog on the IDC tier (from the node's
// backlog publisher, as a mesh node runs it) and helps it, and the stats
// lines count those tasks as same-idc.
func TestWorkerCommandWorkerOnlyHost(t *testing.T) {
	n, url := startNode(t)
	c := nodeClient(t, n)
	pub, pubConn, err := mesh.StartPublisher(context.Background(), n, [backlog.NumTiers]backlog.TierPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Kill(); pubConn.Close() })
	enqueueN(t, c, "push", 40)
	cfg := writeFile(t, "worker.yaml", "queues:\n  push: {kind: sleep, latency: 1ms}\n")
	w := runWorker(t, "--config", cfg, "--server", url, "--node", "", "--id", "helper", "--slots", "4", "--report", "20ms", "--host", "box7")

	ready := w.line("ready line", func(l string) bool { return strings.HasPrefix(l, "mqmesh worker ") })
	want := "mqmesh worker helper (idc local, host box7, worker-only host) ready: 4 slots, queues push (sleep); server " + url
	if ready != want {
		t.Fatalf("ready line\n%q, want\n%q", ready, want)
	}
	eventually(t, 30*time.Second, "backlog drained by the helper", func() bool { return queueStats(t, c, "push").AckedTotal == 40 })
	w.line("a stats line with 40 same-idc tasks", func(l string) bool {
		return strings.HasPrefix(l, "stats: processed local=0 same-idc=40 other-idc=0 ")
	})
	if err := w.stop(); err != nil {
		t.Fatal(err)
	}
	w.line("stopped line", func(l string) bool { return strings.HasPrefix(l, "stopped: processed local=0 same-idc=40 ") })
}

// TestWorkerCommandFlakyAndSlowdown: a flaky handler that always gives up,
// and a sleep handler whose IDC's slowdown fails every first attempt: the
// node sees dead letters and retries.
func TestWorkerCommandFlakyAndSlowdown(t *testing.T) {
	n, url := startNode(t)
	c := nodeClient(t, n)
	cfg := writeFile(t, "worker.yaml", `
queues:
  doomed: {kind: flaky, give_up_rate: 1}
  push:
    kind: sleep
    retry_delay: 1ms
    slowdown:
      local: {error_rate: 1}
`)
	w := runWorker(t, "--config", cfg, "--server", url, "--json", "--report", "0")
	jsonLine[workerReadyJSON](w, "ready", nil)
	enqueueN(t, c, "doomed", 3)
	enqueueN(t, c, "push", 2)
	eventually(t, 30*time.Second, "give-ups dead-lettered and slowed tasks retried", func() bool {
		return queueStats(t, c, "doomed").Dead == 3 && queueStats(t, c, "push").NackedTotal >= 4
	})
	if err := w.stop(); err != nil {
		t.Fatal(err)
	}
	last := jsonLine[workerStatsJSON](w, "stopped", nil)
	if last.GiveUps != 3 || last.Retries < 4 {
		t.Fatalf("stopped line %+v", last)
	}
	dead, _, err := c.DLQList(ctxT(t), "doomed", "", 10)
	if err != nil || len(dead) != 3 || !strings.Contains(dead[0].Reason, demo.ErrInjected.Error()) {
		t.Fatalf("dead letters %v, %v", dead, err)
	}
}

// TestWorkerCommandJoinsMesh: with --seed the pool gossips as a worker
// member, and leaves the mesh when it stops.
func TestWorkerCommandJoinsMesh(t *testing.T) {
	_, url := startNode(t)
	m, err := mesh.New(mesh.Config{
		Meta:     mesh.Meta{Role: mesh.RoleNode, IDC: mqnode.DefaultIDC, Name: "n1"},
		BindAddr: "127.0.0.1", BindPort: mesh.RandomPort, Profile: mesh.ProfileLocal, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = m.Stop(ctx)
	})
	cfg := writeFile(t, "worker.yaml", "id: w9\nqueues:\n  push: {kind: sleep}\n")
	w := runWorker(t, "--config", cfg, "--server", url, "--seed", m.GossipAddr(), "--gossip-port", "0", "--profile", "local", "--json")
	if ready := jsonLine[workerReadyJSON](w, "ready", nil); !ready.Mesh {
		t.Fatalf("ready %+v", ready)
	}
	member := func(state mesh.State) bool {
		for _, mb := range m.Members() {
			if mb.Meta.Role == mesh.RoleWorker && mb.Meta.Name == "w9" && mb.Meta.Node == "n1" && mb.State == state {
				return true
			}
		}
		return false
	}
	eventually(t, 30*time.Second, "the worker alive in the mesh", func() bool { return member(mesh.StateAlive) })
	if err := w.stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the worker left the mesh", func() bool { return member(mesh.StateLeft) })
}

// TestWorkerCommandShutdownTimeout: a handler that outlasts
// --shutdown-timeout is cancelled unacked, and the command says so.
func TestWorkerCommandShutdownTimeout(t *testing.T) {
	n, url := startNode(t)
	c := nodeClient(t, n)
	cfg := writeFile(t, "worker.yaml", "queues:\n  slow: {kind: sleep, latency: 1h}\n")
	w := runWorker(t, "--config", cfg, "--server", url, "--json", "--report", "10ms", "--shutdown-timeout", "100ms")
	enqueueN(t, c, "slow", 1)
	jsonLine[workerStatsJSON](w, "stats", func(s workerStatsJSON) bool { return s.Busy == 1 })
	wantErr(t, w.stop(), "handlers still running at stop", "--shutdown-timeout 100ms")
	if st := queueStats(t, c, "slow"); st.AckedTotal != 0 || st.NackedTotal != 0 {
		t.Fatalf("a cut-short task was settled: %v", st)
	}
}

// TestWorkerCommandSignals: SIGINT stops gracefully (the running handler
// is waited for); a second SIGINT kills the pool.
func TestWorkerCommandSignals(t *testing.T) {
	n, url := startNode(t)
	c := nodeClient(t, n)
	cfg := writeFile(t, "worker.yaml", "queues:\n  slow: {kind: sleep, latency: 1h}\n")
	w := runWorker(t, "--config", cfg, "--server", url, "--json", "--report", "10ms")
	enqueueN(t, c, "slow", 1)
	jsonLine[workerStatsJSON](w, "stats", func(s workerStatsJSON) bool { return s.Busy == 1 })
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// The graceful stop waits for the hour-long handler...
	eventually(t, 30*time.Second, "the graceful stop begun", func() bool { return w.stderrHas("stopping worker pool") })
	// ...until a second signal kills the pool.
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	wantErr(t, w.wait(), "killed by a second signal (interrupt)")
	if st := queueStats(t, c, "slow"); st.AckedTotal != 0 || st.NackedTotal != 0 {
		t.Fatalf("a killed handler's task was settled: %v", st)
	}
}

func TestWorkerCommandBadConfig(t *testing.T) {
	const push = "queues:\n  push: {kind: sleep}\n"
	for _, tc := range []struct {
		name   string
		config string // "" = no --config
		args   []string
		want   []string
	}{
		{"no config", "", nil, []string{"--config is required"}},
		{"unknown key", "queus:\n  push: {kind: sleep}\n", nil, []string{"line 1: field queus not found in the worker config"}},
		{"unknown handler key", "queues:\n  push: {kind: sleep, error_rat: 0.1}\n", nil, []string{"field error_rat not found in a queue's handler"}},
		{"unknown latency key", "queues:\n  push: {kind: sleep, latency: {median: 1ms, p95: 2ms}}\n", nil, []string{"field p95 not found in latency"}},
		{"unknown kind", "queues:\n  push: {kind: grouped}\n", nil, []string{`queues.push.kind "grouped": want sleep, flaky or fanout`}},
		{"negative rate", "queues:\n  push: {kind: flaky, error_rate: -0.5}\n", nil, []string{"queues.push.error_rate -0.5: must be between 0 and 1"}},
		{"slowdown rate", "queues:\n  push: {kind: sleep, slowdown: {east: {error_rate: 1.5}}}\n", nil, []string{"queues.push.slowdown.east.error_rate 1.5"}},
		{"fanout cycle", "queues:\n  a: {kind: fanout, fanout: {queue: b, count: 1}}\n  b: {kind: fanout, fanout: {queue: a, count: 1}}\n", nil, []string{"fanouts form a cycle (a -> b -> a)"}},
		{"no queues", "id: w1\n", nil, []string{"queues: none configured"}},
		{"duration without unit", "lease: 30\n" + push, nil, []string{"a duration is a number with a unit"}},
		{"bad id", "id: a.b\n" + push, nil, []string{`id "a.b" contains '.'`}},
		{"negative slots", push, []string{"--slots", "-1"}, []string{"slots -1: must not be negative"}},
		{"negative lease", "lease: -1s\n" + push, nil, []string{"lease -1s: must not be negative"}},
		{"policy key", "policy: {local_batchh: 3}\n" + push, nil, []string{"field local_batchh not found in policy"}},
		{"gossip flag without seed", push, []string{"--gossip-port", "7000"}, []string{"--gossip-port: the pool joins no mesh"}},
		{"bad profile", push, []string{"--seed", "127.0.0.1:7946", "--profile", "fast"}, []string{`mesh: profile "fast": want lan, wan or local`}},
		{"mesh without seeds", "mesh: {port: 0}\n" + push, nil, []string{"mesh.seeds: none"}},
		{"mesh key", "mesh: {seeds: [127.0.0.1:1], sead: x}\n" + push, nil, []string{"field sead not found in mesh"}},
		{"filter file", push, []string{"--filter", "/nonexistent/filter.yaml"}, []string{"filter file"}},
		{"report", push, []string{"--report", "-1s"}, []string{"--report -1s: must not be negative"}},
		{"empty server", push, []string{"--server", ""}, []string{"server (--server): empty URL"}},
		{"no node", push, []string{"--server", "nats://127.0.0.1:1"}, []string{"server nats://127.0.0.1:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"worker"}
			if tc.config != "" {
				args = append(args, "--config", writeFile(t, "worker.yaml", tc.config))
			}
			_, _, err := cli(t, "", append(args, tc.args...)...)
			wantErr(t, err, tc.want...)
		})
	}
}

func TestWorkerConfigNodeKey(t *testing.T) {
	for text, want := range map[string]bool{
		push1:                        false, // learned from the server
		"node: n2\n" + push1:         true,
		"node: \"\"\n" + push1:       true, // a worker-only host
		"node:\n" + push1:            false,
		"# node: n1\n" + push1:       false,
		"idc: east\n" + push1:        false,
		"node: ''\nidc: e\n" + push1: true,
	} {
		_, got, err := loadWorkerConfig(writeFile(t, "w.yaml", text))
		if err != nil || got != want {
			t.Errorf("%q: node given %v (%v), want %v", text, got, err, want)
		}
	}
}

const push1 = "queues:\n  push: {kind: sleep}\n"

// TestWorkerExampleConfig: configs/worker.yaml is valid and shows every
// handler kind and a slowdown.
func TestWorkerExampleConfig(t *testing.T) {
	const path = "../../configs/worker.yaml"
	cfg, _, err := loadWorkerConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	o := &workerOptions{cfg: cfg, Log: logFlags{Level: "info", Format: "text"}, ShutdownTimeout: time.Second}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	kinds := map[demo.Kind]bool{}
	slowdown := false
	for _, s := range cfg.Queues {
		kinds[s.Kind] = true
		slowdown = slowdown || len(s.Slowdown) > 0
	}
	if !kinds[demo.KindSleep] || !kinds[demo.KindFlaky] || !kinds[demo.KindFanout] || !slowdown {
		t.Fatalf("example shows kinds %v, slowdown %v", kinds, slowdown)
	}
	// It states the true defaults.
	def := worker.Config{}.WithDefaults()
	if cfg.Server != defaultServer || cfg.Policy != def.Policy || cfg.Slots != def.Slots || cfg.Lease != def.Lease ||
		cfg.ExtendEvery != def.ExtendEvery || cfg.HandlerTimeout != def.HandlerTimeout {
		t.Fatalf("%s does not state the defaults: %+v, want server %s and %+v", path, cfg, defaultServer, def)
	}
	// Every key is explained (as a key or, for the handler keys, in the
	// comment that lists them).
	full, err := yaml.Marshal(workerFile{
		Config: worker.Config{Mesh: &mesh.Config{}}.WithDefaults(),
		Queues: demo.Queues{"q": {Fanout: &demo.Fanout{}, Slowdown: map[string]demo.Slowdown{"idc": {}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(full, &doc); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range yamlKeys(doc, "") {
		if !regexp.MustCompile(`(^|[^a-z_])` + key + `([^a-z_]|$)`).Match(raw) {
			t.Errorf("%s does not mention the key %s", path, key)
		}
	}
}

// yamlKeys lists the keys of a decoded YAML mapping at any depth, except
// the names under queues and slowdown (those are queue and IDC names).
func yamlKeys(m map[string]any, parent string) []string {
	var keys []string
	for k, v := range m {
		if parent != "queues" && parent != "slowdown" {
			keys = append(keys, k)
		}
		if sub, ok := v.(map[string]any); ok {
			keys = append(keys, yamlKeys(sub, k)...)
		}
	}
	return keys
}
