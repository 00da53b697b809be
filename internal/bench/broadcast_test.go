package bench

import (
	"strings"
	"testing"
)

// A short run completes, its JSON has every figure, every worker that
// should have seen the burst did and none other did, and it leaves no
// data behind (TestMain checks for leaked goroutines).
func TestBroadcastShortRun(t *testing.T) {
	dir := t.TempDir()
	out, logs, err := runCommand(t, "backlog", "--filters-dir", "../../configs/filters", "--steady", "2s", "--warmup", "200ms",
		"--burst", "600", "--burst-hold", "2s", "--rounds", "2", "--json", "--dir", dir)
	if err != nil {
		t.Fatalf("bench backlog: %v\nstderr:\n%s", err, logs)
	}
	r := decodeStrict[BroadcastReport](t, out)
	if r.Schema != BroadcastSchema || !r.OK || r.Error != "" || r.Config.IDCs != 2 || r.Config.NodesPerIDC != 3 ||
		r.Config.Burst != 600 || len(r.Config.Policies) != 3 || len(r.Notes) == 0 {
		t.Fatalf("report header: %+v", r)
	}
	wantTiers := map[string]string{"local-only": "local", "local-idc": "local,idc", "everything": "local,idc,global"}
	if len(r.Filters) != 3 {
		t.Fatalf("filters: %+v", r.Filters)
	}
	// Each config hears at least the heartbeats of the one before (node
	// heartbeats go on the local tier by default, so the floors are equal).
	for i, f := range r.Filters {
		if f.HeartbeatFloorPerWorkerPerS <= 0 || i > 0 && f.HeartbeatFloorPerWorkerPerS < r.Filters[i-1].HeartbeatFloorPerWorkerPerS {
			t.Errorf("heartbeat floors: %+v", r.Filters)
		}
	}
	for _, f := range r.Filters {
		if wantTiers[f.Filter] != strings.Join(f.Tiers, ",") || f.Workers != 6 {
			t.Errorf("filter %+v", f)
		}
		// Every worker hears its own node's heartbeats in either window.
		if f.Steady.Seconds <= 0 || f.Steady.PerWorkerPerS <= 0 || f.Steady.ByTier.Local <= 0 ||
			f.Event.Seconds <= 0 || f.Event.PerWorkerPerS <= 0 || f.Event.MaxWorkerPerS < f.Event.PerWorkerPerS {
			t.Errorf("filter %s: notice figures missing: %+v", f.Filter, f)
		}
		if f.Filter == "local-only" && (f.Steady.ByTier.IDC != 0 || f.Steady.ByTier.Global != 0 || f.Event.ByTier.Global != 0) {
			t.Errorf("local-only heard other tiers: %+v", f)
		}
	}
	// Per tier: the workers of every filter config subscribing to it.
	want := map[string]int{"local/local-only": 2, "local/local-idc": 2, "local/everything": 2,
		"idc/local-idc": 4, "idc/everything": 4, "global/everything": 6}
	if len(r.Latency) != len(want) {
		t.Fatalf("latency rows %+v", r.Latency)
	}
	for _, l := range r.Latency {
		if n, ok := want[l.Tier+"/"+l.Filter]; !ok || l.Samples != n || len(l.AllMs) != n || l.Missed != 0 ||
			l.Where == "" || l.MinMs > l.MedianMs || l.MedianMs > l.MaxMs {
			t.Errorf("latency row %+v", l)
		}
	}
	if len(r.Bursts) != 2 || r.Bursts[0].Node != "a1" || r.Bursts[1].Node != "b2" {
		t.Fatalf("bursts %+v", r.Bursts)
	}
	for _, b := range r.Bursts {
		if b.Tasks != 600 || b.EventS <= 0 || b.CrossedMs.Global < b.CrossedMs.Local || b.Missed != 0 || b.Unexpected != 0 ||
			b.NotCleared != 0 || b.ClearedMs < 0 {
			t.Errorf("burst %+v", b)
		}
	}
	if !strings.Contains(logs, "bench: backlog: burst 1:") {
		t.Errorf("no progress on stderr:\n%s", logs)
	}
	assertEmptyDir(t, dir)
}

func TestBroadcastRejectsBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backlog", "--idcs", "0"}, "--idcs"},
		{[]string{"backlog", "--rate", "0"}, "--rate"},
		{[]string{"backlog", "--burst", "0"}, "--burst"},
		{[]string{"backlog", "--poll", "1ns"}, "--poll"},
		{[]string{"backlog", "--filters-dir", t.TempDir()}, "--filters-dir"},
	} {
		_, _, err := runCommand(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}
