//go:build linux

package mqnode

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// pageOutChunk is the most one madvise call covers.
const pageOutChunk = 4 << 20

// pageOutMapped advises MADV_PAGEOUT on this process's shared mappings of
// table (.sst) files and of every value-log (.vlog) file but the newest
// under dir (see pageout.go). The newest value-log file is the one Badger
// appends to: paging its dirty pages out would start their writeback while
// Badger writes next to them, and a write to a page under writeback waits.
func pageOutMapped(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return err
	}
	defer f.Close()
	type mapping struct {
		start, end uint64
		path       string
	}
	var ms []mapping
	newest := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || len(fs[1]) < 4 || fs[1][3] != 's' {
			continue
		}
		path := strings.Join(fs[5:], " ")
		vlog := strings.HasSuffix(path, ".vlog")
		if !strings.HasPrefix(path, abs+string(filepath.Separator)) || !vlog && !strings.HasSuffix(path, ".sst") {
			continue
		}
		lo, hi, ok := strings.Cut(fs[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		// Value-log names are numbers, zero-padded to 6 digits: the
		// longest, then largest, is the newest.
		if b := filepath.Base(path); vlog && (len(b) > len(newest) || len(b) == len(newest) && b > newest) {
			newest = b
		}
		ms = append(ms, mapping{start, end, path})
	}
	errs := []error{sc.Err()}
	for _, m := range ms {
		if filepath.Base(m.path) == newest {
			continue
		}
		// In chunks: the kernel holds this process's mmap lock (shared)
		// through one call, and a waiting mmap or munmap (the Go runtime's,
		// Badger's) would hold every later page fault behind it.
		for at := m.start; at < m.end; at += pageOutChunk {
			n := min(pageOutChunk, m.end-at)
			if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(at), uintptr(n), unix.MADV_PAGEOUT); e != 0 {
				if e != unix.EINVAL && e != unix.ENOMEM {
					errs = append(errs, e)
				}
				break // unmapped meanwhile
			}
		}
	}
	return errors.Join(errs...)
}
