package worker

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"testing/quick"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
)

var now0 = time.Unix(1000, 0)

func entry(idc, node string, ready uint64) backlog.Entry {
	return backlog.Entry{IDC: idc, Node: node, Queue: "q", Ready: ready, Updated: now0}
}

func TestDecideTable(t *testing.T) {
	cfg := PolicyConfig{}.WithDefaults()
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name string
		s    Situation
		want Where
		node string
		max  int
	}{
		{"no capacity", Situation{IDC: "a", Node: "n1", Free: 0}, Nowhere, "", 0},
		{"local first", Situation{IDC: "a", Node: "n1", Free: 10, Entries: []backlog.Entry{entry("a", "n2", 100)}}, Local, "n1", 10},
		{"local batch cap", Situation{IDC: "a", Node: "n1", Free: 100}, Local, "n1", 32},
		{"drained: help same IDC", Situation{IDC: "a", Node: "n1", Free: 10, LocalDrained: true,
			Entries: []backlog.Entry{entry("a", "n2", 100), entry("b", "m1", 1000)}}, SameIDC, "n2", 10},
		{"drained: never ask more than the backlog", Situation{IDC: "a", Node: "n1", Free: 10, LocalDrained: true,
			Entries: []backlog.Entry{entry("a", "n2", 3)}}, SameIDC, "n2", 3},
		{"drained: other IDC when own IDC is fine", Situation{IDC: "a", Node: "n1", Free: 100, LocalDrained: true,
			Entries: []backlog.Entry{entry("b", "m1", 1000), entry("a", "n1", 50)}}, OtherIDC, "m1", 64},
		{"drained: nothing anywhere: long-poll own node", Situation{IDC: "a", Node: "n1", Free: 5, LocalDrained: true}, Local, "n1", 5},
		{"worker-only host: IDC is the first tier", Situation{IDC: "a", Free: 5, Entries: []backlog.Entry{entry("a", "n2", 9)}}, SameIDC, "n2", 5},
		{"worker-only host idle", Situation{IDC: "a", Free: 5}, Nowhere, "", 0},
		{"stale entries ignored", Situation{IDC: "a", Node: "n1", Free: 5, LocalDrained: true, Now: now0.Add(time.Minute),
			Entries: []backlog.Entry{entry("a", "n2", 9)}}, Local, "n1", 5},
		{"probe a node found empty that still says it has backlog", Situation{IDC: "a", Node: "n1", Free: 5, LocalDrained: true, Now: now0.Add(time.Second),
			Entries: []backlog.Entry{{IDC: "a", Node: "n2", Queue: "q", Ready: 0, Corrected: true, Level: 2, Updated: now0}}}, SameIDC, "n2", 5},
		{"but not right after the empty pull", Situation{IDC: "a", Node: "n1", Free: 5, LocalDrained: true, Now: now0.Add(100 * time.Millisecond),
			Entries: []backlog.Entry{{IDC: "a", Node: "n2", Queue: "q", Ready: 0, Corrected: true, Level: 2, Updated: now0}}}, Local, "n1", 5},
		{"other queue ignored", Situation{IDC: "a", Node: "n1", Queue: "other", Free: 5, LocalDrained: true,
			Entries: []backlog.Entry{entry("a", "n2", 9)}}, Local, "n1", 5},
	}
	for _, c := range cases {
		if c.s.Queue == "" {
			c.s.Queue = "q"
		}
		if c.s.Now.IsZero() {
			c.s.Now = now0
		}
		d := Decide(c.s, cfg, rng)
		if d.Where != c.want || (c.node != "" && d.Node != c.node) || (c.max != 0 && d.MaxTasks != c.max) {
			t.Errorf("%s: got %+v, want %v %s max %d", c.name, d, c.want, c.node, c.max)
		}
	}
	local := cfg
	local.LocalOnly = true
	d := Decide(Situation{IDC: "a", Node: "n1", Queue: "q", Free: 5, LocalDrained: true, Now: now0,
		Entries: []backlog.Entry{entry("a", "n2", 100)}}, local, rng)
	if d.Where != Local || d.Wait != local.LongPoll {
		t.Errorf("local-only: %+v", d)
	}
}

// Power-of-two choices: two candidates at random, the larger wins. With
// two nodes the big one is chosen 3/4 of the time; among ten equal ones no
// node gets much more than its tenth (no herding on one "best" node).
func TestDecideTwoChoices(t *testing.T) {
	cfg := PolicyConfig{}.WithDefaults()
	rng := rand.New(rand.NewPCG(3, 4))
	s := Situation{IDC: "a", Node: "n1", Queue: "q", Free: 4, LocalDrained: true, Now: now0,
		Entries: []backlog.Entry{entry("a", "big", 900), entry("a", "small", 100)}}
	got := map[string]int{}
	for i := 0; i < 10000; i++ {
		got[Decide(s, cfg, rng).Node]++
	}
	if share := float64(got["big"]) / 10000; share < 0.72 || share > 0.78 {
		t.Fatalf("big node chosen %.2f of the time, want about 0.75", share)
	}
	s.Entries = nil
	for i := range 10 {
		s.Entries = append(s.Entries, entry("b", fmt.Sprintf("n%d", i), 500))
	}
	clear(got)
	for i := 0; i < 10000; i++ {
		got[Decide(s, cfg, rng).Node]++
	}
	for n, c := range got {
		if c > 1300 {
			t.Fatalf("%s chosen %d times of 10000 among 10 equal nodes", n, c)
		}
	}
}

// TestDecideProperties: for any situation, the decision never asks for
// more than the free capacity, never goes remote while the own node has not
// come back short, and never picks the own node as a remote.
func TestDecideProperties(t *testing.T) {
	cfg := PolicyConfig{}.WithDefaults()
	prop := func(seed uint64, free uint8, drained bool, readies [6]uint16, workerOnly bool) bool {
		rng := rand.New(rand.NewPCG(seed, 7))
		s := Situation{IDC: "a", Node: "n0", Queue: "q", Free: int(free % 80), LocalDrained: drained, Now: now0}
		if workerOnly {
			s.Node = ""
		}
		for i, r := range readies {
			idc := "a"
			if i >= 3 {
				idc = "b"
			}
			s.Entries = append(s.Entries, entry(idc, "n"+string(rune('0'+i)), uint64(r)))
		}
		d := Decide(s, cfg, rng)
		switch {
		case d.MaxTasks > s.Free:
			return false
		case s.Free == 0 && d.Where != Nowhere:
			return false
		case s.Node != "" && !drained && s.Free > 0 && d.Where != Local:
			return false
		case (d.Where == SameIDC || d.Where == OtherIDC) && d.Node == s.Node && d.IDC == s.IDC:
			return false
		case d.Where == OtherIDC:
			// Other IDCs only when no node of the own IDC needs help.
			for _, e := range s.Entries {
				if e.IDC == s.IDC && e.Node != s.Node && e.Ready >= cfg.MinHelp {
					return false
				}
			}
		}
		return d.Where == Nowhere || d.MaxTasks >= 1
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 20000}); err != nil {
		t.Fatal(err)
	}
}
