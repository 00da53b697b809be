package backlog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExampleFilterFilesLoad(t *testing.T) {
	files, _ := filepath.Glob("../configs/filters/*.yaml")
	if len(files) < 4 {
		t.Fatalf("found %d example filter files, want 4", len(files))
	}
	for _, f := range files {
		flt, err := LoadFilters(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if _, err := flt.resolve("sh", "n1"); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestFilterErrors(t *testing.T) {
	cases := map[string]string{
		"tiers:\n  local:\n    subject: bl.i.{idc}.>\n":             "is of tier",
		"tiers:\n  idc:\n    subject: bl.i.a.b.c.d\n":               "bad backlog subject",
		"tiers:\n  idc:\n    subject: bl.i.{idc}.>\n    bogus: 1\n": "bogus",
		"tiers:\n  nearby:\n    subject: bl.i.>\n":                  "unknown tier",
		"tiers: {}\n": "no tiers",
		"tiers:\n  idc:\n    subject: bl.i.a.>\n    max_rate: -1\n": "negative",
	}
	for doc, want := range cases {
		f, err := ParseFilters([]byte(doc))
		if err == nil {
			_, err = f.resolve("sh", "n1")
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", doc, err, want)
		}
	}
	// A worker-only host has no local tier.
	f, _ := ParseFilters([]byte("tiers:\n  local:\n    subject: bl.h.{idc}.{node}.>\n"))
	if _, err := f.resolve("sh", ""); err == nil || !strings.Contains(err.Error(), "runs no node") {
		t.Errorf("local tier on a worker-only host: %v", err)
	}
	_ = os.Remove
}
