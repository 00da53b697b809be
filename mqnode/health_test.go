package mqnode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// On a 64 MiB tmpfs filled to under the store's reserve, the disk check
// (what /readyz shows) fails with the reason; freed, it passes again.
func TestCheckDiskReportsAFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("disk-full test skipped in -short mode")
	}
	mnt := mountTmpfs(t, "64m")
	cfg := Config{DataDir: filepath.Join(mnt, "data")}
	smallStore(&cfg)
	n, _ := startNode(t, cfg)
	if err := n.CheckDisk(0); err != nil {
		t.Fatalf("empty disk: %v", err)
	}
	if err := n.CheckStore(); err != nil {
		t.Fatal(err)
	}
	if err := n.CheckNATS(); err != nil {
		t.Fatal(err)
	}
	reserve := n.Config().DiskReserve
	free, err := statfsFree(mnt)
	if err != nil {
		t.Fatal(err)
	}
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, free-reserve/2), 0o644); err != nil {
		t.Fatal(err)
	}
	var why error
	eventually(t, 10*time.Second, "the disk check to fail", func() bool { why = n.CheckDisk(0); return why != nil })
	if !strings.Contains(why.Error(), "disk full:") || !strings.Contains(why.Error(), "reserve") {
		t.Fatalf("reason %q", why)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the disk check to pass again", func() bool { return n.CheckDisk(0) == nil })
}
