package main

import (
	"strings"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/mqnode"
)

func TestTraceCommandShowsTheLifeOfATask(t *testing.T) {
	n, url := startNode(t)
	c := nodeClient(t, n)
	ctx := ctxT(t)
	res, err := c.Enqueue(ctx, "q", &mqnode.EnqueueItem{Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	id := res[0].Id
	ds, _, err := c.Pull(ctx, mqnode.PullRequest{Queue: "q", MaxTasks: 1, WorkerID: "w9"})
	if err != nil || len(ds) != 1 {
		t.Fatalf("pull: %d %v", len(ds), err)
	}
	if _, err := c.AckOne(ctx, &mqnode.AckItem{Receipt: ds[0].Receipt, Kind: mqnode.AckDead, Error: "no such user"}); err != nil {
		t.Fatal(err)
	}
	var tr traceJSON
	deadline := time.Now().Add(10 * time.Second)
	for {
		tr = mustJSON[traceJSON](t, "trace", "--server", url, "--json", id)
		if len(tr.Events) >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var kinds []string
	for _, e := range tr.Events {
		kinds = append(kinds, e.Kind)
	}
	if got := strings.Join(kinds, ","); got != "enqueue,lease,give-up,dead" || tr.Node != "n1" || tr.TaskID != id {
		t.Fatalf("trace %+v: kinds %s", tr, got)
	}
	if e := tr.Events[1]; e.Worker != "w9" || e.Attempt != 1 {
		t.Errorf("lease %+v", e)
	}
	if e := tr.Events[3]; !strings.Contains(e.Error, "no such user") {
		t.Errorf("dead %+v: want the reason", e)
	}
	text := mustCLI(t, "trace", "--server", url, id)
	for _, want := range []string{"task " + id + " on node local/n1, queue q: 4 events", "worker w9", "give-up", "error: given up by handler: no such user"} {
		if !strings.Contains(text, want) {
			t.Errorf("text output lacks %q:\n%s", want, text)
		}
	}
	_, _, err = cli(t, "", "trace", "--server", url, "--wait", "200ms", "0000-unknown")
	wantErr(t, err, "task 0000-unknown: no node answered with its trace within 200ms")
}
