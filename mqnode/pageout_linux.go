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

// pageOutMapped advises MADV_PAGEOUT on this process's shared mappings of
// value-log (.vlog) and table (.sst) files under dir (see pageout.go).
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
	var errs []error
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || len(fs[1]) < 4 || fs[1][3] != 's' {
			continue
		}
		path := strings.Join(fs[5:], " ")
		if !strings.HasPrefix(path, abs+string(filepath.Separator)) || !(strings.HasSuffix(path, ".vlog") || strings.HasSuffix(path, ".sst")) {
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
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_PAGEOUT); e != 0 && e != unix.EINVAL && e != unix.ENOMEM {
			errs = append(errs, e)
		}
	}
	return errors.Join(append(errs, sc.Err())...)
}
