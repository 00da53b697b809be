package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestSimModelCommand(t *testing.T) {
	args := []string{"sim", "--model", "--sizes", "24,12", "--model-duration", "9s", "--seed", "11", "--quiet"}
	table := mustCLI(t, args...)
	if !strings.Contains(table, "sizes run: 12, 24 hosts") || !strings.Contains(table, "sh pools lost") || !strings.Contains(table, "(seed 11)") {
		t.Fatalf("table:\n%s", table)
	}
	if again := mustCLI(t, args...); again != table {
		t.Fatalf("same seed, different output:\n%s\n---\n%s", table, again)
	}
	var rep struct {
		Seed  uint64 `json:"seed"`
		Sizes []int  `json:"sizes_run"`
		Runs  []struct {
			Hosts          int     `json:"hosts"`
			Enqueued       int64   `json:"enqueued"`
			Completed      int64   `json:"completed"`
			Lost           int64   `json:"lost"`
			Drained        bool    `json:"drained"`
			OtherIDC       float64 `json:"other_idc_share"`
			ViewMismatches uint64  `json:"view_mismatches"`
			Fault          *struct {
				FirstHelpS float64 `json:"first_help_s"`
			} `json:"fault"`
		} `json:"runs"`
	}
	out := mustCLI(t, append(args, "--json", "--model-fault", "pools-lost")...)
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.Seed != 11 || len(rep.Sizes) != 2 || len(rep.Runs) != 2 {
		t.Fatalf("--json: %s", out)
	}
	for _, r := range rep.Runs {
		if r.Lost != 0 || !r.Drained || r.Completed != r.Enqueued || r.Enqueued == 0 || r.ViewMismatches != 0 || r.Fault == nil || r.Fault.FirstHelpS < 0 || r.OtherIDC == 0 {
			t.Fatalf("--json run: %+v", r)
		}
	}
	if other := mustCLI(t, "sim", "--model", "--sizes", "12", "--model-duration", "6s", "--seed", "12", "--quiet"); other == mustCLI(t, "sim", "--model", "--sizes", "12", "--model-duration", "6s", "--seed", "11", "--quiet") {
		t.Fatal("another seed, same output")
	}

	nocap := writeFile(t, "nocap.yaml", "tiers:\n  local: {subject: \"bl.h.{idc}.{node}.>\"}\n  idc: {subject: \"bl.i.{idc}.>\"}\n  global: {subject: \"bl.g.>\"}\n")
	if out := mustCLI(t, append(args, "--model-filter", nocap)...); !strings.Contains(out, "filter "+nocap) || !strings.Contains(out, "  0.0%") {
		t.Fatalf("--model-filter without caps:\n%s", out)
	}
	bad := writeFile(t, "bad.yaml", "tiers: {}\n")

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"sim", "--model", "--sizes", "2"}, "--sizes"},
		{[]string{"sim", "--model", "--model-fault", "meteor"}, "meteor"},
		{[]string{"sim", "--model", "--idcs", "0"}, "idcs"},
		{[]string{"sim", "--sizes", "100"}, "only with --model"},
		{[]string{"sim", "--model", "--model-filter", bad}, "--model-filter"},
		{[]string{"sim", "--model", "--model-duration", "0s", "--sizes", "3"}, "duration"},
	} {
		_, _, err := cli(t, "", c.args...)
		wantErr(t, err, c.want)
	}
}
