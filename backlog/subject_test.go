package backlog

import (
	"errors"
	"testing"
)

func TestSubjectRoundTrip(t *testing.T) {
	s := Subject(TierIDC, "sh", "n1", "push")
	a, err := ParseSubject(s)
	if err != nil || a != (Address{Tier: TierIDC, IDC: "sh", Node: "n1", Queue: "push"}) {
		t.Fatalf("ParseSubject(%q) = %v, %v", s, a, err)
	}
	for _, bad := range []string{"", "bl", "bl.x.sh.n1.q", "bl.i.sh.n1", "bl.i.sh.n1.q.extra", "bl.i.s h.n1.q", "xx.i.sh.n1.q", "bl.i.*.n1.q", "bl.i.sh.n1.>"} {
		if _, err := ParseSubject(bad); !errors.Is(err, ErrBadSubject) {
			t.Errorf("ParseSubject(%q) = %v, want ErrBadSubject", bad, err)
		}
	}
}

func TestPatterns(t *testing.T) {
	good := map[string][]string{
		"bl.h.sh.n1.>":  {"bl.h.sh.n1.push"},
		"bl.i.sh.>":     {"bl.i.sh.n1.push", "bl.i.sh.n2.mail"},
		"bl.g.>":        {"bl.g.sz.n9.push"},
		"bl.i.*.*.push": {"bl.i.sh.n1.push"},
	}
	for p, matches := range good {
		pat, err := ParsePattern(p)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", p, err)
		}
		for _, s := range matches {
			if !pat.Matches(s) {
				t.Errorf("%q does not match %q", p, s)
			}
		}
		if pat.Matches("bl.x.sh.n1.push") {
			t.Errorf("%q matches another tier", p)
		}
	}
	for _, bad := range []string{"bl.>", "bl.*.>", "bl.i.sh", "bl.i.>.n1", "bl.i.a.b.c.d", "bl.i.s h.>", "bl.q.>", "x.i.>", "bl.i.sh.n1"} {
		if _, err := ParsePattern(bad); !errors.Is(err, ErrBadSubject) {
			t.Errorf("ParsePattern(%q) = %v, want ErrBadSubject", bad, err)
		}
	}
}

func FuzzParseSubject(f *testing.F) {
	f.Add("bl.i.sh.n1.push")
	f.Add("bl.g.a.b._node")
	f.Add("bl..a.b.c")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseSubject(s)
		if err != nil {
			return
		}
		if got := Subject(a.Tier, a.IDC, a.Node, a.Queue); got != s {
			t.Fatalf("ParseSubject(%q) renders back as %q", s, got)
		}
	})
}

func FuzzParsePattern(f *testing.F) {
	f.Add("bl.i.sh.>")
	f.Add("bl.h.sh.n1.>")
	f.Add("bl.g.*.*.push")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if err != nil {
			return
		}
		// A valid pattern never matches a subject of another tier.
		for _, other := range Tiers {
			if other != p.Tier && p.Matches(Subject(other, "a", "b", "c")) {
				t.Fatalf("pattern %q matches tier %v", s, other)
			}
		}
	})
}
