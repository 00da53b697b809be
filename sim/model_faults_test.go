package sim

import (
	"testing"
	"time"
)

// The faults besides the measured one: handler errors (retries), worker-only
// hosts, a slow link and host crashes that take the IDC's summarizer with
// them. Nothing is lost, the views stay exact (every decision checked), the
// crashed IDC elects another summarizer when gossip declares the crash and
// its first node again once it restarts, and worker-only pools help.
func TestModelExtraFaults(t *testing.T) {
	s := Default()
	s.Seed = 7
	x := DefaultModelExtras
	x.CrashShare = 0.1
	c, err := ModelFromScenarioWith(s, 60, 3, 12*time.Second, 20, FaultPoolsLost, x)
	if err != nil {
		t.Fatal(err)
	}
	c.CheckViews = 1
	c.LeaseRelease = time.Second // gossip declares the crash before the restart
	r := runModel(t, c)
	if !r.Drained || r.Completed != r.Enqueued || r.Stranded != 0 {
		t.Fatalf("not drained: %+v", r)
	}
	if r.Retries == 0 || r.WorkerOnly != 6 || r.Crashed != 2 || r.Refused == 0 {
		t.Fatalf("extras not exercised: retries %d, worker-only %d, crashed %d, refused %d", r.Retries, r.WorkerOnly, r.Crashed, r.Refused)
	}
	// Two summarized tiers, each: away from the crashed first node, back.
	if r.Elections != 4 {
		t.Fatalf("%d summarizer elections, want 4", r.Elections)
	}
	f := r.Fault
	if f == nil || f.NodesHelped != f.Nodes || f.FirstHelpS > 0.5 {
		t.Fatalf("pools lost with extras: %+v", f)
	}
	crashed := phase(t, r, "sz nodes crashed")
	if crashed.Completed == 0 {
		t.Fatalf("nothing done while sz's nodes were down: %+v", crashed)
	}
	t.Logf("helpers %d/%d, max/mean %.2f; %d retries, %d refused, %d summaries", f.Helpers, f.Candidates, f.HelperMaxMean, r.Retries, r.Refused, r.Summaries)
}
