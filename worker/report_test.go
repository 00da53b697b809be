package worker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestReportCountsPerBackend(t *testing.T) {
	task := &Task{ID: "t1"}
	ctx := withTask(context.Background(), task)
	task.Report("user-db", 2)
	Report(ctx, "user-db", 1)
	_ = task.Call("search", func() error { return nil })
	task.Report("bad.name", 5) // a dot would make a subject token invalid
	task.Report("user-db", 0)
	Report(context.Background(), "user-db", 7) // not a handler's context: nothing
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	client := &http.Client{Transport: Transport("user-api", nil)}
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	calls, bad := task.takeCalls()
	got := map[string]uint64{}
	for _, c := range calls {
		got[c.Backend] = c.Calls
	}
	want := map[string]uint64{"user-db": 3, "search": 1, "user-api": 3}
	if len(got) != len(want) || got["user-db"] != 3 || got["search"] != 1 || got["user-api"] != 3 {
		t.Errorf("calls %v, want %v", got, want)
	}
	if bad != "bad.name" {
		t.Errorf("invalid name reported as %q", bad)
	}
	if again, _ := task.takeCalls(); len(again) != 0 {
		t.Errorf("calls reported twice: %v", again)
	}
	if it := Done().ackItem([]byte("r"), calls); len(it.Calls) != 3 {
		t.Errorf("ack item carries %d backend counts", len(it.Calls))
	}
}
