package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/mqmesh/mqmesh/mqnode"
)

func TestEnqueueThenStats(t *testing.T) {
	_, url := startNode(t)
	res := mustJSON[enqueueJSON](t, "enqueue", "--server", url, "--queue", "jobs", "--count", "25", "--batch", "10", "--size", "32", "--json")
	if res.Queue != "jobs" || res.Node != "n1" || res.IDC != "local" || res.Duplicates != 0 || len(res.IDs) != 25 {
		t.Fatalf("enqueue result %+v", res)
	}
	if u := slices.Compact(slices.Sorted(slices.Values(res.IDs))); len(u) != 25 {
		t.Fatalf("%d distinct ids of 25", len(u))
	}

	st := mustJSON[statsJSON](t, "stats", "--server", url, "--queue", "jobs", "--json")
	if st.Node.Name != "n1" || st.Node.IDC != "local" || st.Node.StartedAt.IsZero() {
		t.Fatalf("stats node %+v", st.Node)
	}
	if len(st.Queues) != 1 {
		t.Fatalf("stats queues %+v", st.Queues)
	}
	if q := st.Queues[0]; q.Queue != "jobs" || q.Ready != 25 || q.EnqueuedTotal != 25 || q.Leased != 0 || q.Dead != 0 {
		t.Fatalf("stats %+v: want 25 ready of 25 enqueued", q)
	}

	out := mustCLI(t, "stats", "--server", url)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 5 || !strings.HasPrefix(lines[0], "QUEUE") || strings.Fields(lines[1])[0] != "jobs" || strings.Fields(lines[1])[1] != "25" ||
		lines[2] != "" || !strings.HasPrefix(lines[3], "THROTTLE") || strings.Fields(lines[4])[0] != "cpu" {
		t.Fatalf("stats table:\n%s", out)
	}
	if !strings.Contains(out, "ENQUEUED") || !strings.Contains(out, "\njobs   25        0") {
		t.Fatalf("stats text lacks the totals:\n%s", out)
	}
	if len(st.Throttles) != 1 || st.Throttles[0].Kind != "cpu" || st.Throttles[0].Reason == "" {
		t.Fatalf("stats node throttles %+v", st.Throttles)
	}
}

func TestStatsEmptyAndUnknown(t *testing.T) {
	_, url := startNode(t)
	st := mustJSON[statsJSON](t, "stats", "--server", url, "--json")
	if st.Queues == nil || len(st.Queues) != 0 {
		t.Fatalf("queues %#v: want []", st.Queues)
	}
	_, _, err := cli(t, "", "stats", "--server", url, "--queue", "nosuch")
	wantErr(t, err, "unknown queue", "nosuch")
}

// TestEnqueueSummary: many tasks print one summary line, not their ids.
func TestEnqueueSummary(t *testing.T) {
	_, url := startNode(t)
	out := mustCLI(t, "enqueue", "--server", url, "--queue", "bulk", "--count", "1000", "--batch", "100")
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "enqueued 1000 task(s) on bulk at ") {
		t.Fatalf("enqueue --count 1000 printed %q, want one summary line", out)
	}
}

func TestEnqueueTextPayloadHeadersDelay(t *testing.T) {
	n, url := startNode(t)
	out := mustCLI(t, "enqueue", "--server", url, "--queue", "mail", "--payload", "hello", "-H", "tenant=acme", "-H", "trace=a=b", "--ids")
	id := strings.TrimSpace(out)
	if id == "" || strings.Count(out, "\n") != 1 {
		t.Fatalf("enqueue printed %q, want one id line", out)
	}
	c := nodeClient(t, n)
	ds, _, err := c.Pull(ctxT(t), mqnode.PullRequest{Queue: "mail", MaxTasks: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Task.Id != id || string(ds[0].Task.Payload) != "hello" ||
		ds[0].Task.Headers["tenant"] != "acme" || ds[0].Task.Headers["trace"] != "a=b" {
		t.Fatalf("delivered %v", ds)
	}

	mustCLI(t, "enqueue", "--server", url, "--queue", "mail", "--payload", "later", "--delay", "1h")
	st := mustJSON[statsJSON](t, "stats", "--server", url, "--queue", "mail", "--json")
	if q := st.Queues[0]; q.Delayed != 1 || q.Ready != 0 || q.Leased != 1 {
		t.Fatalf("stats %+v: want 1 delayed, 1 leased", q)
	}
}

func TestEnqueueFromFileAndStdin(t *testing.T) {
	n, url := startNode(t)
	c := nodeClient(t, n)
	file := writeFile(t, "payload.bin", "from a file\x00\xff")
	mustCLI(t, "enqueue", "--server", url, "--queue", "files", "--file", file)
	if _, _, err := cli(t, "from stdin", "enqueue", "--server", url, "--queue", "files", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	ds, _, err := c.Pull(ctxT(t), mqnode.PullRequest{Queue: "files", MaxTasks: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, string(d.Task.Payload))
	}
	if want := []string{"from a file\x00\xff", "from stdin"}; !slices.Equal(got, want) {
		t.Fatalf("payloads %q, want %q", got, want)
	}
}

func TestEnqueueDedup(t *testing.T) {
	_, url := startNode(t)
	args := []string{"enqueue", "--server", url, "--queue", "d", "--payload", "x", "--dedup", "k1", "--json"}
	first := mustJSON[enqueueJSON](t, args...)
	again := mustJSON[enqueueJSON](t, args...)
	if first.Duplicates != 0 || again.Duplicates != 1 || !slices.Equal(first.IDs, again.IDs) {
		t.Fatalf("first %+v, again %+v: want the same id, reported as a duplicate", first, again)
	}

	// With --count, task i gets KEY-i: rerunning the command adds nothing.
	args = []string{"enqueue", "--server", url, "--queue", "d", "--count", "3", "--dedup", "batch7", "--json"}
	first = mustJSON[enqueueJSON](t, args...)
	again = mustJSON[enqueueJSON](t, args...)
	if first.Duplicates != 0 || again.Duplicates != 3 || !slices.Equal(first.IDs, again.IDs) {
		t.Fatalf("first %+v, again %+v", first, again)
	}
	out, stderr, err := cli(t, "", "enqueue", "--server", url, "--queue", "d", "--payload", "x", "--dedup", "k1")
	if err != nil || !strings.Contains(out, "1 were duplicates") {
		t.Fatalf("text mode: err %v, stdout %q, stderr %q: want the duplicate in the summary", err, out, stderr)
	}
	st := mustJSON[statsJSON](t, "stats", "--server", url, "--json")
	if st.Queues[0].Ready != 4 {
		t.Fatalf("ready %d, want 4", st.Queues[0].Ready)
	}
}

// Batches are bounded by bytes as well as by --batch: ten payloads of
// ~1 MB do not fit one 8 MiB NATS message.
func TestEnqueueSplitsLargeBatches(t *testing.T) {
	_, url := startNode(t)
	res := mustJSON[enqueueJSON](t, "enqueue", "--server", url, "--queue", "big", "--count", "10", "--size", "1000000", "--json")
	if len(res.IDs) != 10 {
		t.Fatalf("%d ids, want 10", len(res.IDs))
	}
	_, _, err := cli(t, "", "enqueue", "--server", url, "--queue", "big", "--size", "2000000")
	wantErr(t, err, "enqueued 0 of 1", "payload too large")
}

func TestEnqueueBadFlags(t *testing.T) {
	_, url := startNode(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"wildcard queue", []string{"--queue", "a.>"}, []string{"--queue", `"a.>"`, "wildcard"}},
		{"no queue", nil, []string{"--queue is required"}},
		{"count with payload", []string{"--queue", "q", "--count", "2", "--payload", "x"}, []string{"--count", "--payload"}},
		{"count with file", []string{"--queue", "q", "--count", "2", "--file", "f"}, []string{"--count", "--file"}},
		{"two sources", []string{"--queue", "q", "--payload", "x", "--size", "3"}, []string{"--payload and --size"}},
		{"zero count", []string{"--queue", "q", "--count", "0"}, []string{"--count 0"}},
		{"negative size", []string{"--queue", "q", "--size", "-1"}, []string{"--size -1"}},
		{"zero batch", []string{"--queue", "q", "--batch", "0"}, []string{"--batch 0"}},
		{"negative delay", []string{"--queue", "q", "--delay", "-1s"}, []string{"--delay"}},
		{"bad header", []string{"--queue", "q", "-H", "novalue"}, []string{`--header "novalue"`}},
		{"bad duration", []string{"--queue", "q", "--delay", "soon"}, []string{"--delay"}},
		{"unknown flag", []string{"--queue", "q", "--colour"}, []string{"unknown flag: --colour"}},
		{"missing file", []string{"--queue", "q", "--file", "/nonexistent/p"}, []string{"/nonexistent/p"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := cli(t, "", append([]string{"enqueue", "--server", url}, tc.args...)...)
			wantErr(t, err, tc.want...)
			if out != "" {
				t.Fatalf("stdout %q on error", out)
			}
		})
	}
	st := mustJSON[statsJSON](t, "stats", "--server", url, "--json")
	if len(st.Queues) != 0 {
		t.Fatalf("a refused command created queues: %+v", st.Queues)
	}
}

func TestClientUnreachable(t *testing.T) {
	out, _, err := cli(t, "", "stats", "--server", "nats://127.0.0.1:1", "--timeout", "2s")
	wantErr(t, err, "unavailable", "nats://127.0.0.1:1")
	if out != "" {
		t.Fatalf("stdout %q on error", out)
	}
	_, _, err = cli(t, "", "stats", "--timeout", "0s")
	wantErr(t, err, "--timeout")
}
