package main

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// deadLetter enqueues n tasks on queue through the CLI and sends each to
// the dead letter queue with reason; it returns their task ids.
func deadLetter(t *testing.T, n *mqnode.Node, url, queue string, count int, reason string) []string {
	t.Helper()
	res := mustJSON[enqueueJSON](t, "enqueue", "--server", url, "--queue", queue, "--count", strconv.Itoa(count), "--json")
	c := nodeClient(t, n)
	ds, _, err := c.Pull(ctxT(t), mqnode.PullRequest{Queue: queue, MaxTasks: count})
	if err != nil || len(ds) != count {
		t.Fatalf("pull: %d deliveries, err %v", len(ds), err)
	}
	for _, d := range ds {
		if _, err := c.AckOne(ctxT(t), &mqnode.AckItem{Receipt: d.Receipt, Kind: wirepb.AckKind_DEAD, Error: reason}); err != nil {
			t.Fatal(err)
		}
	}
	return res.IDs
}

func TestDLQListRequeuePurge(t *testing.T) {
	n, url := startNode(t)
	ids := deadLetter(t, n, url, "jobs", 2, "boom")
	srv := []string{"--server", url, "--queue", "jobs"}

	list := mustJSON[dlqListJSON](t, append([]string{"dlq", "list", "--json"}, srv...)...)
	if list.Queue != "jobs" || len(list.Records) != 2 || list.Next != "" {
		t.Fatalf("list %+v", list)
	}
	var taskIDs []string
	for _, r := range list.Records {
		taskIDs = append(taskIDs, r.TaskID)
		if r.DeadID == "" || r.Attempts != 1 || r.DeadAt.IsZero() || r.PayloadBytes != defaultPayloadSize ||
			!strings.Contains(r.Reason+r.LastError, "boom") {
			t.Fatalf("record %+v", r)
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(taskIDs)), slices.Sorted(slices.Values(ids))) {
		t.Fatalf("dead task ids %v, want %v", taskIDs, ids)
	}

	out := mustCLI(t, append([]string{"dlq", "list"}, srv...)...)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "DEAD_ID") ||
		!strings.Contains(lines[1], list.Records[0].DeadID) || !strings.Contains(lines[1], list.Records[0].TaskID) {
		t.Fatalf("list table:\n%s", out)
	}

	// Paging: --limit stops early and names the cursor; --after resumes.
	page := mustJSON[dlqListJSON](t, append([]string{"dlq", "list", "--json", "--limit", "1"}, srv...)...)
	if len(page.Records) != 1 || page.Records[0] != list.Records[0] || page.Next == "" {
		t.Fatalf("page 1 %+v", page)
	}
	page = mustJSON[dlqListJSON](t, append([]string{"dlq", "list", "--json", "--after", page.Next}, srv...)...)
	if len(page.Records) != 1 || page.Records[0] != list.Records[1] || page.Next != "" {
		t.Fatalf("page 2 %+v", page)
	}

	_, _, err := cli(t, "", append([]string{"dlq", "requeue"}, srv...)...)
	wantErr(t, err, "--id", "--all")
	_, _, err = cli(t, "", append([]string{"dlq", "purge", "--all", "--id", "x"}, srv...)...)
	wantErr(t, err, "--id and --all")

	ch := mustJSON[dlqChangeJSON](t, append([]string{"dlq", "requeue", "--json", "--id", list.Records[0].DeadID}, srv...)...)
	if ch != (dlqChangeJSON{Queue: "jobs", Op: "requeue", Affected: 1}) {
		t.Fatalf("requeue %+v", ch)
	}
	st := mustJSON[statsJSON](t, "stats", "--server", url, "--json")
	if q := st.Queues[0]; q.Ready != 1 || q.Dead != 1 {
		t.Fatalf("after requeue: %+v, want 1 ready, 1 dead", q)
	}

	out = mustCLI(t, append([]string{"dlq", "purge", "--all"}, srv...)...)
	if out != "purged 1 dead-letter records of queue jobs\n" {
		t.Fatalf("purge printed %q", out)
	}
	list = mustJSON[dlqListJSON](t, append([]string{"dlq", "list", "--json"}, srv...)...)
	if list.Records == nil || len(list.Records) != 0 {
		t.Fatalf("after purge: %#v, want records []", list.Records)
	}
}

func TestDLQErrors(t *testing.T) {
	_, url := startNode(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown queue", []string{"list", "--queue", "nosuch"}, []string{"unknown queue", "nosuch"}},
		{"unknown queue requeue", []string{"requeue", "--queue", "nosuch", "--all"}, []string{"unknown queue"}},
		{"wildcard queue", []string{"purge", "--queue", "a.*", "--all"}, []string{"--queue", `"a.*"`}},
		{"no queue", []string{"list"}, []string{"--queue is required"}},
		{"id on list", []string{"list", "--queue", "q", "--id", "1"}, []string{"unknown flag: --id"}},
		{"negative limit", []string{"list", "--queue", "q", "--limit", "-1"}, []string{"--limit -1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := cli(t, "", append([]string{"dlq", tc.args[0], "--server", url}, tc.args[1:]...)...)
			wantErr(t, err, tc.want...)
			if out != "" {
				t.Fatalf("stdout %q on error", out)
			}
		})
	}
}
