package backlog

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/mqmesh/mqmesh/backlog/backlogpb"
)

// TestSummarizerScenarios runs the scripts in testdata/summary (datadriven;
// rewrite the expected output with -rewrite). Commands:
//
//	init [k=N] [shards=N] [interval=D]   nodes nN go to shard N mod shards
//	notice t=D node=N ready=R level=L [queue=Q] [oldest=D] [seq=S] [inc=I] [idc=I]
//	forget node=N
//	sync
//	tick t=D
//
// tick prints each summary sent: shard, seq, backlogged nodes, whether it
// is a refresh, and the nodes named (node/queue level ready).
func TestSummarizerScenarios(t *testing.T) {
	epoch := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	datadriven.Walk(t, "testdata/summary", func(t *testing.T, path string) {
		var s *Summarizer
		var seq uint64
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			args := map[string]string{}
			for _, a := range d.CmdArgs {
				args[a.Key] = strings.Join(a.Vals, ",")
			}
			num := func(k string, def uint64) uint64 {
				if v, ok := args[k]; ok {
					n, err := strconv.ParseUint(v, 10, 64)
					if err != nil {
						d.Fatalf(t, "%s: %v", k, err)
					}
					return n
				}
				return def
			}
			at := func() time.Time {
				dt, err := time.ParseDuration(args["t"])
				if err != nil {
					d.Fatalf(t, "t: %v", err)
				}
				return epoch.Add(dt)
			}
			switch d.Cmd {
			case "init":
				interval, _ := time.ParseDuration(args["interval"])
				shards := int(num("shards", 1))
				s = NewSummarizer(SummaryConfig{IDC: "sh", Node: "n1", Incarnation: 1, K: int(num("k", 0)),
					Shards: shards, MinInterval: interval,
					ShardOf: func(node string) int {
						n, _ := strconv.Atoi(strings.TrimPrefix(node, "n"))
						return n % shards
					}})
				seq = 0
				return ""
			case "notice":
				seq++
				oldest, _ := time.ParseDuration(args["oldest"])
				n := &backlogpb.Notice{Idc: "sh", Node: args["node"], Queue: "q", Ready: num("ready", 0),
					Level: uint32(num("level", 0)), OldestReadyAgeMs: oldest.Milliseconds(), Seq: num("seq", seq), Incarnation: num("inc", 1)}
				if q, ok := args["queue"]; ok {
					n.Queue = q
				}
				if idc, ok := args["idc"]; ok {
					n.Idc = idc
				}
				s.Observe(n, at())
				return ""
			case "forget":
				s.Forget(args["node"])
				return ""
			case "sync":
				s.RequestSync()
				return ""
			case "tick":
				var b strings.Builder
				for _, sum := range s.Tick(at()) {
					fmt.Fprintf(&b, "shard=%d/%d seq=%d backlogged=%d", sum.Shard, sum.Shards, sum.Seq, sum.Backlogged)
					if sum.Heartbeat {
						b.WriteString(" refresh")
					}
					b.WriteString(":")
					for _, n := range sum.Nodes {
						fmt.Fprintf(&b, " %s/%s L%d r%d", n.Node, n.Queue, n.Level, n.Ready)
					}
					b.WriteString("\n")
				}
				if b.Len() == 0 {
					return "nothing\n"
				}
				return b.String()
			}
			d.Fatalf(t, "unknown command %s", d.Cmd)
			return ""
		})
	})
}

func TestSummaryShardsAndElection(t *testing.T) {
	for _, c := range []struct{ nodes, k, want int }{{0, 8, 1}, {8, 8, 1}, {9, 8, 2}, {33, 8, 8}, {3334, 8, 512}, {100, 0, 16}} {
		if got := SummaryShards(c.nodes, c.k); got != c.want {
			t.Errorf("SummaryShards(%d, %d) = %d, want %d", c.nodes, c.k, got, c.want)
		}
	}
	if !SummaryElected("a1", []string{"a2", "a1", "a3"}) || SummaryElected("a2", []string{"a2", "a1"}) || !SummaryElected("b", nil) {
		t.Error("the lowest alive name is elected, and only it")
	}
	for _, p := range []string{"bls.g.*.3", "bls.i.sh.0", "bls.g.>", "bls.g.sh.>"} {
		if pat, err := ParseSummaryPattern(p); err != nil || !pat.Summary {
			t.Errorf("%s: %v", p, err)
		}
	}
	for _, p := range []string{"bls.h.sh.0", "bls.g.sh.x", "bls.g.sh", "bls.>.sh.1", "bls.g.sh.1.2", "bls.g.a b.1"} {
		if _, err := ParseSummaryPattern(p); err == nil {
			t.Errorf("%s: accepted", p)
		}
	}
}

// A summary replaces what the view knew of the IDC on its tier; an older
// one of the same summarizer is ignored; a nearer tier keeps its entries.
func TestViewApplySummary(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	v := NewView(func() time.Time { return now })
	n := func(node string, ready, seq uint64) *backlogpb.Notice {
		return &backlogpb.Notice{Idc: "sh", Node: node, Queue: "q", Ready: ready, Level: 1, Seq: seq, Incarnation: 1}
	}
	sum := func(seq uint64, nodes ...*backlogpb.Notice) *backlogpb.Summary {
		return &backlogpb.Summary{Idc: "sh", Summarizer: "n1", Incarnation: 1, Seq: seq, Nodes: nodes}
	}
	names := func() string {
		var out []string
		for _, e := range v.Entries() {
			out = append(out, fmt.Sprintf("%s:%d:%s", e.Node, e.Ready, e.Tier))
		}
		return strings.Join(out, " ")
	}
	v.Apply(TierIDC, n("n4", 7, 1))
	if !v.ApplySummary(TierGlobal, sum(2, n("n2", 50, 3), n("n3", 40, 4), n("n4", 300, 5))) {
		t.Fatal("first summary refused")
	}
	if got := names(); got != "n2:50:global n3:40:global n4:7:idc" {
		t.Fatalf("after the first summary: %s", got)
	}
	if !v.ApplySummary(TierGlobal, sum(3, n("n3", 30, 6))) {
		t.Fatal("second summary refused")
	}
	if got := names(); got != "n3:30:global n4:7:idc" {
		t.Fatalf("after the second summary: %s", got)
	}
	if v.ApplySummary(TierGlobal, sum(2, n("n2", 50, 3))) || names() != "n3:30:global n4:7:idc" {
		t.Fatalf("an older summary was applied: %s", names())
	}
	if st := v.Stats(); st.Summaries != 2 || st.Accepted[TierGlobal] != 0 {
		t.Fatalf("stats %+v: want 2 summaries, no global notices counted", st)
	}
	v.SubscribeTiers([NumTiers]*TierFilter{TierIDC: {}})
	if v.ApplySummary(TierGlobal, sum(9, n("n5", 9, 9))) {
		t.Fatal("a summary of a tier not subscribed was applied")
	}
}
