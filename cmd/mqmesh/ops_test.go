package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/internal/opshttp"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/mqnode"
)

// runNodeHTTP runs `mqmesh node --json --http 127.0.0.1:0 args...` and
// returns its ready line and the endpoint's URL.
func runNodeHTTP(t *testing.T, args ...string) (ready nodeReadyJSON, httpURL string) {
	t.Helper()
	br, _ := startNodeCommand(t, append([]string{"--json", "--http", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--data", t.TempDir()}, args...)...)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("no ready line: %v", err)
	}
	if err := json.Unmarshal([]byte(line), &ready); err != nil {
		t.Fatalf("ready line %q: %v", line, err)
	}
	line, err = br.ReadString('\n')
	if err != nil {
		t.Fatalf("no http line: %v", err)
	}
	var h opsReadyJSON
	if err := json.Unmarshal([]byte(line), &h); err != nil || h.Event != "http" {
		t.Fatalf("http line %q: %v", line, err)
	}
	go io.Copy(io.Discard, br)
	return ready, h.URL
}

func scrape(t *testing.T, url string) opshttp.Families {
	t.Helper()
	f, err := opshttp.Scrape(ctxT(t), http.DefaultClient, url+"/metrics", "")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A known workload on a real node: the /metrics values are those of
// `mqmesh stats`, and the histograms counted every step.
func TestNodeMetricsMatchStats(t *testing.T) {
	ready, base := runNodeHTTP(t, "--name", "m1", "--idc", "east", "--keep-settled", "1h")
	ctx := ctxT(t)
	c, err := mqnode.Dial(ctx, ready.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const q = "jobs"
	for i := range 4 { // 4 enqueue calls of 5 tasks
		items := make([]*mqnode.EnqueueItem, 5)
		for j := range items {
			items[j] = &mqnode.EnqueueItem{Payload: fmt.Appendf(nil, "%d-%d", i, j)}
		}
		if _, err := c.Enqueue(ctx, q, items...); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // one stored, one deduplicated
		if _, err := c.Enqueue(ctx, q, &mqnode.EnqueueItem{Payload: []byte("d"), DedupKey: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	ds, _, err := c.Pull(ctx, mqnode.PullRequest{Queue: q, MaxTasks: 12, Lease: time.Minute, WorkerID: "w1"})
	if err != nil || len(ds) != 12 {
		t.Fatalf("pulled %d, %v", len(ds), err)
	}
	var items []*mqnode.AckItem
	for i, d := range ds[:10] {
		it := &mqnode.AckItem{Receipt: d.Receipt}
		switch {
		case i < 5:
		case i < 8:
			it.Kind, it.DelayMs, it.Error = mqnode.AckNack, time.Hour.Milliseconds(), "boom"
		default:
			it.Kind, it.Error = mqnode.AckDead, "bad input"
		}
		items = append(items, it)
	}
	res, err := c.Ack(ctx, items...)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if err := mqnode.ItemErr(r); err != nil {
			t.Fatal(err)
		}
	}

	st := mustJSON[statsJSON](t, "stats", "--server", ready.URL, "--json")
	m := scrape(t, base)
	if len(st.Queues) != 1 {
		t.Fatalf("stats: %+v", st)
	}
	s := st.Queues[0]
	lq := map[string]string{"queue": q, "idc": "east", "node": "m1"}
	for _, c := range []struct {
		name string
		want uint64
	}{
		{"mqmesh_queue_ready_tasks", s.Ready},
		{"mqmesh_queue_leased_tasks", s.Leased},
		{"mqmesh_queue_delayed_tasks", s.Delayed},
		{"mqmesh_queue_dead_tasks", s.Dead},
		{"mqmesh_queue_enqueued_total", s.EnqueuedTotal},
		{"mqmesh_queue_acked_total", s.AckedTotal},
		{"mqmesh_queue_nacked_total", s.NackedTotal},
		{"mqmesh_queue_dead_lettered_total", s.DeadTotal},
		{"mqmesh_queue_lease_expired_total", s.ExpiredLeasesTotal},
		{"mqmesh_queue_settled_kept_tasks", s.SettledKept},
		{"mqmesh_queue_settled_kept_bytes", s.SettledBytes},
	} {
		got, ok := m.Value(c.name, lq)
		if !ok || got != float64(c.want) {
			t.Errorf("%s = %v (present %v), stats say %d", c.name, got, ok, c.want)
		}
	}
	// The workload itself, so the comparison above cannot pass on zeros.
	if s.Ready != 9 || s.Leased != 2 || s.Delayed != 3 || s.Dead != 2 || s.EnqueuedTotal != 21 || s.AckedTotal != 5 || s.NackedTotal != 3 ||
		s.SettledKept != 7 || s.SettledBytes == 0 {
		t.Errorf("stats after the workload: %+v", s)
	}
	for name, want := range map[string]float64{
		"mqmesh_queue_deduplicated_total":  1,
		"mqmesh_enqueue_duration_seconds":  6,  // enqueue calls
		"mqmesh_schedule_to_start_seconds": 12, // first leases
		"mqmesh_enqueue_to_done_seconds":   5,  // acks
	} {
		if got, ok := m.Value(name, lq); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	for _, name := range []string{"mqmesh_group_commit_duration_seconds", "mqmesh_disk_free_bytes", "mqmesh_node_up"} {
		if v, ok := m.Value(name, map[string]string{"idc": "east", "node": "m1"}); !ok || v <= 0 {
			t.Errorf("%s = %v (present %v), want > 0", name, v, ok)
		}
	}
	// Badger refreshes its sizes once a minute: present, maybe still 0.
	if _, ok := m.Value("mqmesh_badger_vlog_size_bytes", nil); !ok {
		t.Error("no mqmesh_badger_vlog_size_bytes")
	}
	if v, ok := m.Value("mqmesh_backlog_notices_sent_total", map[string]string{"tier": "local"}); !ok || v < 1 {
		t.Errorf("notices sent on the local tier = %v (present %v)", v, ok)
	}
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, v
}

// /healthz answers while the process serves; /readyz fails on a disk the
// node counts as full and says why.
func TestNodeHealthAndReadiness(t *testing.T) {
	_, base := runNodeHTTP(t)
	if code, v := getJSON(t, base+"/healthz"); code != 200 || v["status"] != "live" {
		t.Fatalf("healthz %d %v", code, v)
	}
	if code, v := getJSON(t, base+"/readyz"); code != 200 || v["status"] != "ready" {
		t.Fatalf("readyz %d %v", code, v)
	}
	// Beyond loopback only with secrets.
	_, _, err := cli(t, "", "node", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0")
	wantErr(t, err, "refusing --http 0.0.0.0:0 beyond loopback without --secrets")
	// A node that needs more free space than any disk has: disk full.
	_, full := runNodeHTTP(t, "--ready-min-free", fmt.Sprint(uint64(1)<<62))
	code, v := getJSON(t, full+"/readyz")
	if code != http.StatusServiceUnavailable || v["status"] != "not ready" {
		t.Fatalf("readyz on a full disk: %d %v", code, v)
	}
	b, _ := json.Marshal(v["checks"])
	if !strings.Contains(string(b), `"name":"disk","ok":false,"reason":"disk full:`) {
		t.Fatalf("checks %s: want the disk check failing with its reason", b)
	}
}

// A worker's /metrics after a known workload: what it processed, by tier,
// equals what the node acked, and the handler histogram counted it.
func TestWorkerMetricsMatchTheNode(t *testing.T) {
	n, url := startNode(t)
	c := nodeClient(t, n)
	cfg := writeFile(t, "worker.yaml", "id: w1\nqueues:\n  push: {kind: sleep, latency: 1ms}\n")
	w := runWorker(t, "--config", cfg, "--server", url, "--json", "--report", "0", "--http", "127.0.0.1:0")
	h := jsonLine[opsReadyJSON](w, "http", nil)
	enqueueN(t, c, "push", 25)
	eventually(t, 30*time.Second, "tasks acked", func() bool { return queueStats(t, c, "push").AckedTotal == 25 })
	lw := map[string]string{"pool": "w1", "idc": mqnode.DefaultIDC}
	var m opshttp.Families
	eventually(t, 10*time.Second, "worker counted them", func() bool {
		m = scrape(t, h.URL)
		v, _ := m.Value("mqmesh_worker_tasks_processed_total", map[string]string{"pool": "w1", "tier": "local"})
		return v == 25
	})
	if v, ok := m.Value("mqmesh_worker_handler_duration_seconds", map[string]string{"queue": "push", "tier": "local", "outcome": "done"}); !ok || v != 25 {
		t.Errorf("handler histogram count %v (present %v), want 25", v, ok)
	}
	if v, ok := m.Value("mqmesh_worker_pulls_total", map[string]string{"pool": "w1", "tier": "local"}); !ok || v < 1 {
		t.Errorf("pulls %v (present %v)", v, ok)
	}
	if v, ok := m.Value("mqmesh_worker_slots", lw); !ok || v <= 0 {
		t.Errorf("slots %v (present %v)", v, ok)
	}
	if code, v := getJSON(t, h.URL+"/readyz"); code != 200 {
		t.Errorf("worker readyz %d %v", code, v)
	}
}

// With --secrets the endpoint is TLS with the node certificate and every
// path but the probes needs the admin token; trace and top work as admin.
func TestOpsEndpointWithSecrets(t *testing.T) {
	dir := secretstest.Dir(t)
	set, err := secrets.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := set.AdminToken()
	ready, base := runNodeHTTP(t, "--secrets", dir, "--name", "s1", "--trace-sample", "1")
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("endpoint %s: want TLS", base)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: set.ClientTLS()}}
	get := func(path, token string) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("/metrics", ""); c != http.StatusUnauthorized {
		t.Errorf("metrics without a token: %d", c)
	}
	if c := get("/metrics", "wrong"); c != http.StatusUnauthorized {
		t.Errorf("metrics with a wrong token: %d", c)
	}
	if c := get("/metrics", tok); c != http.StatusOK {
		t.Errorf("metrics with the admin token: %d", c)
	}
	if c := get("/readyz", ""); c != http.StatusOK {
		t.Errorf("readyz (a probe, no token): %d", c)
	}
	if resp, err := http.Get("http" + strings.TrimPrefix(base, "https") + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain http served metrics on the TLS endpoint")
		}
	}
	enq := mustJSON[enqueueJSON](t, "enqueue", "--secrets", dir, "--server", ready.URL, "--queue", "jobs", "--payload", "hi", "--json")
	if len(enq.IDs) != 1 {
		t.Fatalf("enqueue: %+v", enq)
	}
	id := enq.IDs[0]
	eventually(t, 30*time.Second, "trace as admin", func() bool {
		out, _, err := cli(t, "", "trace", "--secrets", dir, "--server", ready.URL, "--json", "--wait", "5s", id)
		var tr traceJSON
		return err == nil && json.Unmarshal([]byte(out), &tr) == nil && len(tr.Events) == 1 && tr.Events[0].Kind == "enqueue"
	})
	out := mustCLI(t, "top", "--once", "--secrets", dir, "--server", ready.URL)
	if !strings.Contains(out, "s1") || !strings.Contains(out, "1 nodes in 1 IDCs") {
		t.Errorf("top as admin:\n%s", out)
	}
	// A producer may not look up traces.
	_, _, err = cli(t, "", "trace", "--secrets", dir, "--role", "producer", "--server", ready.URL, "--wait", "300ms", id)
	if err == nil {
		t.Error("a producer read a trace")
	}
}
