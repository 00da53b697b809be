package mqnode

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// backFile allocates blocks for the whole of path (size bytes) without
// changing its contents or size. It returns the bytes still unbacked when
// allocation fails.
func backFile(path string, size int64) (short int64, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, nil // removed or renamed meanwhile: nothing to back
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	if st.Blocks*512 >= size {
		return 0, nil
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, size); err != nil {
		return size - st.Blocks*512, fmt.Errorf("fallocate %s (%d bytes): %w", path, size, err)
	}
	return 0, nil
}

// sparseBytes is how much of a file has no disk blocks behind it.
func sparseBytes(info fs.FileInfo) int64 {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	return max(info.Size()-st.Blocks*512, 0)
}
