package mqnode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The ledger finds records missing from a queue, ignores a torn tail, and
// never reports a loss for a store that holds as much as it should.
func TestLedgerReportsMissingRecords(t *testing.T) {
	dir := t.TempDir()
	l, chk, err := openLedger(dir, map[string]int64{"a": 10, "b": 5}, testLogger(t))
	if err != nil || chk.lost != nil || chk.note != "" {
		t.Fatalf("fresh ledger: %v %+v", err, chk)
	}
	// A commit that adds 3 to a and one that takes 2 from b.
	mk := func(q string, stored int64) *writeOp {
		return &writeOp{fx: []effect{{q: &queue{name: q}, stored: stored}}}
	}
	p := l.begin([]*writeOp{mk("a", 3)})
	l.end(p, true)
	p = l.begin([]*writeOp{mk("b", -2)})
	// The process dies here: b's commit may or may not have landed.
	l.close()
	f, err := os.OpenFile(filepath.Join(dir, ledgerFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{9, 0, 0}) // a torn record
	f.Close()

	for _, tc := range []struct {
		counts map[string]int64
		lost   map[string]int64
	}{
		{map[string]int64{"a": 13, "b": 5}, nil}, // b's delete did not land
		{map[string]int64{"a": 13, "b": 3}, nil}, // it did
		{map[string]int64{"a": 12, "b": 3}, map[string]int64{"a": 1}},
		{map[string]int64{"b": 1}, map[string]int64{"a": 13, "b": 2}}, // queue a gone
	} {
		// Each check starts from a copy of the damaged ledger.
		d2 := t.TempDir()
		b, _ := os.ReadFile(filepath.Join(dir, ledgerFile))
		os.WriteFile(filepath.Join(d2, ledgerFile), b, 0o644)
		l2, chk, err := openLedger(d2, tc.counts, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		l2.close()
		if len(chk.lost) != len(tc.lost) || !strings.Contains(chk.note, "torn") {
			t.Fatalf("counts %v: lost %v (want %v), note %q", tc.counts, chk.lost, tc.lost, chk.note)
		}
		for q, n := range tc.lost {
			if chk.lost[q] != n {
				t.Fatalf("counts %v: lost %v, want %v", tc.counts, chk.lost, tc.lost)
			}
		}
	}
	_ = p
}
