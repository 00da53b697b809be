package mqnode

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// precheckStore reads Badger's MANIFEST and tables before Badger opens them.
// Badger opens tables on goroutines of its own, where a damaged index
// panics out of reach of any recover (the suite saw "slice bounds out of
// range" from a flipped byte in an .sst); and a MANIFEST cut short opens
// "fine" but no longer lists tables, which Badger then deletes as garbage.
// Both become a refusal to start that names the file and the repair path.
// The check reads every table in full once (block checksums), which costs
// start time in proportion to the LSM tree (keys and value pointers, not
// payloads: payloads are in the value log).
func precheckStore(opts badger.Options) error {
	dir := opts.Dir
	tables, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return err
	}
	mpath := filepath.Join(dir, badger.ManifestFilename)
	fp, err := os.Open(mpath)
	if errors.Is(err, fs.ErrNotExist) {
		if len(tables) > 0 {
			return damaged(dir, "MANIFEST is missing but %d tables exist (Badger would delete them)", len(tables))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStorage, err)
	}
	m, trunc, err := replayManifest(fp, opts)
	info, _ := fp.Stat()
	fp.Close()
	if err != nil {
		return damaged(dir, "MANIFEST unreadable: %v", err)
	}
	if info != nil && trunc < info.Size() {
		// A torn last change is normal after a crash; a table on disk that
		// the manifest no longer lists is not.
		for _, p := range tables {
			id, ok := table.ParseFileID(filepath.Base(p))
			if _, listed := m.Tables[id]; ok && !listed {
				return damaged(dir, "MANIFEST is cut at byte %d of %d and no longer lists table %s (Badger would delete it)",
					trunc, info.Size(), filepath.Base(p))
			}
		}
	}
	for _, p := range tables {
		comp := opts.Compression
		if id, ok := table.ParseFileID(filepath.Base(p)); ok {
			if tm, listed := m.Tables[id]; listed {
				comp = tm.Compression // as the table was written
			}
		}
		if err := checkTable(p, comp, opts.BlockSize); err != nil {
			return damaged(dir, "table %s: %v", filepath.Base(p), err)
		}
	}
	return nil
}

func replayManifest(fp *os.File, opts badger.Options) (m badger.Manifest, trunc int64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic while reading it: %v", r)
		}
	}()
	return badger.ReplayManifestFile(fp, opts.ExternalMagicVersion, opts)
}

// checkTable opens one table read-only and verifies its checksums.
func checkTable(path string, comp options.CompressionType, blockSize int) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("unreadable (panic while opening it: %v)", r)
		}
	}()
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	t, err := table.OpenTable(mf, table.Options{ReadOnly: true, ChkMode: options.OnTableRead, Compression: comp, BlockSize: blockSize})
	if err != nil {
		return err
	}
	// Not DecrRef: at zero references it deletes the file.
	return t.Close(-1)
}

func damaged(dir, f string, a ...any) error {
	return fmt.Errorf("%w: %s in %s; the node will not start on it. Salvage what can be read into a fresh store with `mqmesh node repair --data %s`, or restore this node from a replica",
		ErrCorrupted, fmt.Sprintf(f, a...), dir, dir)
}
