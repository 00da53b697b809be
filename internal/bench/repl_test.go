package bench

import (
	"strings"
	"testing"
)

// TestNodeReplPair runs the replicated pairing on a tiny workload: a
// primary and its buddy against a 3-server JetStream R3 stream, and the
// unreplicated node beside them. Every task is delivered by every peer;
// the primary's buddy confirmed every enqueue (and the acks' deletes), so
// none was acknowledged without it; the cost ratios are there.
func TestNodeReplPair(t *testing.T) {
	dir := t.TempDir()
	out, logs, err := runCommand(t, "node", "--pairs", "repl", "--count", "1500", "--batch", "50", "--producers", "4",
		"--consumers", "2", "--json", "--dir", dir, "--tune=false", "--peers", "jetstream", "--secure=false", "--repl-rounds", "2")
	if err != nil {
		t.Fatalf("bench node: %v\nstderr:\n%s", err, logs)
	}
	r := decodeStrict[Report](t, out)
	if !r.OK || len(r.Pairs) != 1 || r.Pairs[0].Pair != durRepl {
		t.Fatalf("report: %s", out)
	}
	p := r.Pairs[0]
	if p.ReplicatedFsync == nil || p.Unreplicated == nil {
		t.Fatalf("pair: %+v", p)
	}
	want := map[string]string{"mqnode-r1 async_r1_sync": "", "jetstream-r3 default_r3": "", "mqnode-r1 fsync_r1_sync": "", "mqnode fsync": ""}
	for _, res := range p.results() {
		delete(want, res.Peer+" "+res.Durability)
		if !res.OK || res.Delivered != 1500 || res.Lost != 0 {
			t.Errorf("%s %s: %+v", res.Peer, res.Durability, res)
		}
		f := res.Replication
		if (res.Peer == peerMQNodeR1) != (f != nil) {
			t.Errorf("%s %s: replication figures %+v", res.Peer, res.Durability, f)
		}
		// Every enqueue and every ack's delete is a record the buddy
		// confirmed before the enqueue was acknowledged.
		if f != nil && (f.State != "replicated" || f.AckedRecords < 1500 || f.Batches == 0 || f.UnreplicatedAcks != 0 || f.LastBatchRTTMs <= 0) {
			t.Errorf("%s %s: replication figures %+v", res.Peer, res.Durability, *f)
		}
	}
	if len(want) > 0 {
		t.Errorf("runs missing: %v", want)
	}
	// Two rounds of the four runs, in turn; the results are of them.
	if len(p.Rounds) != 8 || p.Rounds[0].Peer != peerMQNodeR1 || p.Rounds[1].Peer != peerJetStreamR3 || p.Rounds[4].Peer != peerMQNodeR1 {
		t.Errorf("rounds: %d runs", len(p.Rounds))
	}
	if p.MQNode.EndToEndS != p.Rounds[0].EndToEndS && p.MQNode.EndToEndS != p.Rounds[4].EndToEndS {
		t.Errorf("mqnode-r1's result %v s is none of its rounds'", p.MQNode.EndToEndS)
	}
	for _, q := range []*Ratio{p.Ratio, p.ReplicationCost, p.ReplicationCostFsync} {
		if q == nil || q.EnqueuePerS <= 0 || q.EndToEndS <= 0 {
			t.Errorf("ratios: %+v %+v %+v", p.Ratio, p.ReplicationCost, p.ReplicationCostFsync)
		}
	}
	if !strings.Contains(logs, "bench: jetstream-r3 default_r3: enqueued 1500 tasks") {
		t.Errorf("no progress on stderr:\n%s", logs)
	}
	assertEmptyDir(t, dir)
}

// TestMedian: the median round by end-to-end time, unless a round failed.
func TestMedian(t *testing.T) {
	rs := []Result{{OK: true, EndToEndS: 3}, {OK: true, EndToEndS: 1}, {OK: true, EndToEndS: 2}}
	if m := median(rs); m.EndToEndS != 2 {
		t.Errorf("median of 3, 1, 2: %v", m.EndToEndS)
	}
	rs[2] = Result{Error: "boom", EndToEndS: 2}
	if m := median(rs); m.Error != "boom" {
		t.Errorf("a failed round was hidden: %+v", m)
	}
	if m := median(nil); m.OK {
		t.Errorf("median of none: %+v", m)
	}
}
