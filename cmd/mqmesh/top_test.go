package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/mqmesh/mqmesh/internal/meshview"
	"github.com/mqmesh/mqmesh/mqnode"
)

// `mqmesh top --once` against a real mesh of two IDCs: a row per node, a
// sum row per IDC, the backlog where it was enqueued.
func TestTopShowsEveryNodeOfTheMesh(t *testing.T) {
	a, _ := meshNode(t, append([]string{"--name", "a1", "--idc", "east"}, meshFlags...)...)
	b, _ := meshNode(t, append([]string{"--name", "b1", "--idc", "west", "--seed", a.Gossip}, meshFlags...)...)
	c, err := mqnode.Dial(ctxT(t), b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	enqueueN(t, c, "push", 7)
	var out string
	eventually(t, 20*time.Second, "both nodes in top", func() bool {
		out = mustCLI(t, "top", "--once", "--server", a.URL)
		return strings.Contains(out, "2 nodes in 2 IDCs") && !strings.Contains(out, "DOWN")
	})
	lines := strings.Split(out, "\n")
	var a1, b1, sums []string
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) > 2 && f[1] == "a1":
			a1 = f
		case len(f) > 2 && f[1] == "b1":
			b1 = f
		case len(f) > 0 && f[0] == "Σ":
			sums = append(sums, l)
		}
	}
	if a1 == nil || b1 == nil || len(sums) != 2 {
		t.Fatalf("top output:\n%s", out)
	}
	if a1[0] != "east" || a1[2] != "alive" || a1[3] != "0" || b1[0] != "west" || b1[3] != "7" {
		t.Fatalf("rows a1 %q, b1 %q in\n%s", a1, b1, out)
	}
	if f := strings.Fields(sums[1]); len(f) < 5 || f[1] != "west" || f[4] != "7" {
		t.Fatalf("west sum row %q", sums[1])
	}
	snap := mustJSON[meshview.Snapshot](t, "top", "--once", "--json", "--server", b.URL)
	if len(snap.Nodes) != 2 || !snap.Mesh {
		t.Fatalf("snapshot %+v", snap)
	}
}

// The model without a terminal: a snapshot is drawn, a failed refresh
// keeps the last one and says why, q quits.
func TestTopModel(t *testing.T) {
	snaps := []*meshview.Snapshot{{
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Mesh: true, Workers: 3,
		Nodes: []meshview.Node{
			{IDC: "east", Name: "a1", State: "alive", Ready: 120, Leased: 8, InRate: 50, OutRate: 42.5, OldestReadyMs: 45000,
				Throttles: []string{"cpu"}, LeasesLocal: 90, LeasesIDC: 10, Alert: "oldest 45s; throttled cpu"},
			{IDC: "east", Name: "a2", State: "suspect", Err: "timeout", Alert: "DOWN; SUSPECT"},
			{IDC: "west", Name: "b1", State: "alive", Ready: 3, LeasesOther: 4},
		},
	}}
	var calls int
	m := &topModel{ctx: context.Background(), interval: time.Second, take: func(context.Context) (*meshview.Snapshot, error) {
		calls++
		if calls > len(snaps) {
			return nil, errors.New("node gone")
		}
		return snaps[calls-1], nil
	}}
	if v := m.View(); !strings.Contains(v, "connecting") {
		t.Fatalf("before the first snapshot: %q", v)
	}
	_, cmd := m.Update(m.Init()())
	if cmd == nil {
		t.Fatal("no tick scheduled after a snapshot")
	}
	v := m.View()
	for _, want := range []string{
		"mqmesh top — 3 nodes in 2 IDCs, 3 workers — 03:04:05",
		"east     a1         alive        120       8     50.0     42.5     45s cpu            90%/10%/0%           oldest 45s; throttled cpu",
		"east     a2         suspect        0       0      0.0      0.0       -                -                    DOWN; SUSPECT",
		"Σ east   2 nodes                 120       8     50.0     42.5     45s                90%/10%/0%           1 down",
		"west     b1         alive          3       0      0.0      0.0       -                0%/0%/100%",
	} {
		if !strings.Contains(v, want) {
			t.Errorf("frame lacks %q:\n%s", want, v)
		}
	}
	m.Update(tickMsg{})
	m.Update(m.fetch())
	if v := m.View(); !strings.Contains(v, "last refresh failed: node gone") || !strings.Contains(v, "a1") {
		t.Errorf("after a failed refresh:\n%s", v)
	}
	m.Update(tea.WindowSizeMsg{Width: 30})
	for _, l := range strings.Split(strings.TrimSpace(m.View()), "\n") {
		if w := len([]rune(l)); w > 30 {
			t.Errorf("line of %d runes at width 30: %q", w, l)
		}
	}
	if _, cmd := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")}); cmd == nil || cmd() != tea.Quit() {
		t.Error("q does not quit")
	}
}
