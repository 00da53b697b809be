package mqnode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Disk full is an answer, not a crash.
//
// Why Badger used to die with SIGBUS: it writes its write-ahead log (.mem,
// created at 2 × MemTableSize), its value log (.vlog, created at
// 2 × ValueLogFileSize) and new tables (.sst) through memory maps of files
// it made with ftruncate, that is sparse files with no disk blocks behind
// them. A store into such a page makes the kernel allocate a block; when the
// filesystem has none left the fault cannot be served and the process gets
// SIGBUS, which Go cannot turn into an error on Badger's own goroutines. An
// ENOSPC from a write(2) would have been an error; a mapped page is not.
//
// What the node does about it:
//   - It counts the sparse bytes of every .mem and .vlog file as used, and
//     once free space is tight (less than twice the reserve after those) it
//     backs them with real blocks (fallocate), so stores into them can no
//     longer fault. A file that cannot be backed is logged.
//   - It keeps a reserve (Config.DiskReserve) of free space for what Badger
//     maps next (a new memtable and value-log file, tables from flushes and
//     compaction). Below it, enqueues (and acks that carry subtasks) answer
//     DISK_FULL; pulls, acks, nacks, lease expiry and DLQ purges go on, they
//     use the reserve. Writes resume by themselves once space returns.
//   - A node that starts below the reserve starts read-mostly and says so; one
//     that starts with less than Badger needs to open (a new memtable file)
//     refuses to start with a message, rather than dying inside Badger.

// diskCheckEvery is how often the watcher looks; an enqueue looks itself
// when the last look is older than diskAdmitEvery.
const (
	diskCheckEvery = 250 * time.Millisecond
	diskAdmitEvery = 2 * time.Millisecond
)

type diskWatch struct {
	dir          string
	reserve      atomic.Int64 // bytes; atomic so tests can move it under a running store
	lastCheck    atomic.Int64 // unix ns of the last statfs
	free         atomic.Int64 // bytes available, less unbacked mapped bytes
	full         atomic.Bool
	unbacked     atomic.Int64 // sparse bytes of mapped log files
	refusedTotal atomic.Uint64
}

func newDiskWatch(dir string, reserve int64) *diskWatch {
	d := &diskWatch{dir: dir}
	d.reserve.Store(reserve)
	return d
}

// statfs returns the bytes available to this process in dir.
func statfsFree(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// check reads free space and updates the full flag; it reports a change.
func (d *diskWatch) check() (changed bool, err error) {
	free, err := statfsFree(d.dir)
	if err != nil {
		return false, err
	}
	free -= d.unbacked.Load()
	d.free.Store(free)
	d.lastCheck.Store(time.Now().UnixNano())
	full := free < d.reserve.Load()
	return d.full.Swap(full) != full, nil
}

// backFiles counts the sparse bytes of Badger's mapped log files and, when
// free space is tight, gives those files their blocks. With plenty of room
// (free space less all sparse bytes still twice the reserve) a touched
// sparse page cannot run the disk out, so files stay sparse and cost no
// disk until written; the sparse bytes count as used either way.
func (d *diskWatch) backFiles() error {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return err
	}
	type sparse struct {
		path        string
		size, short int64
	}
	var files []sparse
	var total int64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".mem") && !strings.HasSuffix(name, ".vlog") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if short := sparseBytes(info); short > 0 {
			files = append(files, sparse{filepath.Join(d.dir, name), info.Size(), short})
			total += short
		}
	}
	if free, err := statfsFree(d.dir); err == nil && free-total >= 2*d.reserve.Load() {
		d.unbacked.Store(total)
		return nil
	}
	var unbacked int64
	var errs []error
	for _, f := range files {
		if _, err := backFile(f.path, f.size); err != nil {
			errs = append(errs, err)
			unbacked += f.short
		}
	}
	d.unbacked.Store(unbacked)
	return errors.Join(errs...)
}

// admit answers DISK_FULL while free space is below the reserve.
func (d *diskWatch) admit() error {
	if time.Now().UnixNano()-d.lastCheck.Load() > int64(diskAdmitEvery) {
		_, _ = d.check()
	}
	if !d.full.Load() {
		return nil
	}
	d.refusedTotal.Add(1)
	return fmt.Errorf("%w: %d bytes free in %s, below the reserve of %d; enqueues are refused until space returns (pulls, acks and dlq purges still work)",
		ErrDiskFull, max(d.free.Load(), 0), d.dir, d.reserve.Load())
}

// runDiskWatch keeps the disk state fresh until the store stops.
func (s *store) runDiskWatch() {
	t := time.NewTicker(diskCheckEvery)
	defer t.Stop()
	lastErr := ""
	for {
		s.diskTick(&lastErr)
		select {
		case <-s.stopBg:
			return
		case <-t.C:
		}
	}
}

func (s *store) diskTick(lastErr *string) {
	d := s.disk
	err := d.backFiles()
	if msg := fmt.Sprint(err); err != nil && msg != *lastErr {
		s.log.Error("badger log files cannot all be backed by disk blocks; counted as used", "unbacked_bytes", d.unbacked.Load(), "err", err)
	}
	*lastErr = fmt.Sprint(err)
	changed, err := d.check()
	if err != nil {
		s.log.Warn("disk space check failed", "err", err)
		return
	}
	if !changed {
		return
	}
	if d.full.Load() {
		s.log.Error("disk below reserve: enqueues answer DISK_FULL until space returns; pulls, acks and dlq purges go on",
			"free_bytes", d.free.Load(), "reserve_bytes", d.reserve.Load(), "dir", d.dir)
	} else {
		s.log.Warn("disk above reserve again: enqueues accepted", "free_bytes", d.free.Load(), "reserve_bytes", d.reserve.Load())
	}
}

// openFloor is the free space Badger needs to open: a new memtable file it
// maps (2 × memtable_size) and writes at once, and some room besides.
func openFloor(cfg Config) int64 { return 2*cfg.MemTableSize + cfg.MemTableSize/2 }

// checkDiskBeforeOpen refuses to open Badger where it would fault, and says
// when the node starts read-mostly.
func checkDiskBeforeOpen(cfg Config) error {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("%w: data dir: %w", ErrStorage, err)
	}
	free, err := statfsFree(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	if floor := openFloor(cfg); free < floor {
		return fmt.Errorf("%w: %d bytes free in %s; the store needs %d to open (2.5 × memtable_size): free space or move the data dir, nothing was changed",
			ErrDiskFull, free, cfg.DataDir, floor)
	}
	if free < cfg.DiskReserve {
		cfg.Logger.Error("starting read-mostly: disk below reserve, enqueues answer DISK_FULL until space returns",
			"free_bytes", free, "reserve_bytes", cfg.DiskReserve, "dir", cfg.DataDir)
	}
	return nil
}
