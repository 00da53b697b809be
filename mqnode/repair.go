package mqnode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Repair salvages a damaged store without opening it with Badger: it reads
// every source that holds records — the value logs (.vlog) and write-ahead
// logs (.mem), entry by entry with their checksums, and every table (.sst)
// block by block — keeps the newest readable version of each key, and
// writes the live records into a fresh store at out. The damaged store is
// not changed. A task whose record cannot be read becomes a dead letter with
// the reason; anything else unreadable is counted in the report.
//
// The value log holds each task with its key, so records a cut write-ahead
// log dropped are found there again. A record deleted (acked) in a part of a
// log that is lost comes back: at-least-once allows it. Dedup keys are not
// carried over (their window restarts).

// RepairReport is what Repair found and wrote.
type RepairReport struct {
	Data    string         `json:"data"`
	Out     string         `json:"out"`
	Files   []RepairSource `json:"files"`
	Tasks   int            `json:"tasks"`    // task records written
	Dead    int            `json:"dead"`     // dead letters written (including new ones)
	NewDead int            `json:"new_dead"` // tasks unreadable, written as dead letters
	Other   int            `json:"other"`    // queue metadata and sequence
	Lost    int            `json:"lost"`     // unreadable records that are not tasks
	Queues  []string       `json:"queues"`
}

// RepairSource is one file read by Repair.
type RepairSource struct {
	File    string `json:"file"`
	Entries int    `json:"entries"`
	Problem string `json:"problem,omitempty"` // "" when read to its end
}

type repairRef struct {
	ver     uint64
	del     bool
	expires uint64
	inline  []byte // value in hand
	path    string // or: value at off, n bytes of path
	off, n  int64
	vp      *[3]uint32 // or: value pointer (fid, len, offset) into a .vlog
}

const badgerVlogHeader = 20

// Repair salvages the store in data into a new store in out.
func Repair(data, out string, log *slog.Logger) (*RepairReport, error) {
	if log == nil {
		log = slog.Default()
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("repair: %s exists; name a new directory", out)
	}
	if _, err := os.Stat(data); err != nil {
		return nil, fmt.Errorf("repair: %w", err)
	}
	rep := &RepairReport{Data: data, Out: out}
	best := map[string]*repairRef{}
	put := func(k []byte, r *repairRef) {
		if bytes.HasPrefix(k, []byte("!badger!")) || (len(k) > 0 && k[0] == pfxDedup) {
			return
		}
		if cur := best[string(k)]; cur == nil || r.ver > cur.ver || (r.ver == cur.ver && cur.vp != nil && r.vp == nil) {
			best[string(k)] = r
		}
	}
	logs, _ := filepath.Glob(filepath.Join(data, "*.vlog"))
	mems, _ := filepath.Glob(filepath.Join(data, "*.mem"))
	for _, p := range append(logs, mems...) {
		rep.Files = append(rep.Files, scanLogFile(p, put))
	}
	tables, _ := filepath.Glob(filepath.Join(data, "*.sst"))
	var manifest badger.Manifest // how each table was written, if readable
	if fp, err := os.Open(filepath.Join(data, badger.ManifestFilename)); err == nil {
		manifest, _, _ = replayManifest(fp, badger.DefaultOptions(data))
		fp.Close()
	}
	for _, p := range tables {
		// A table is read with the compression it was written with: the
		// manifest's if it says, else each kind in turn.
		var src RepairSource
		var ents []tableEntry
		comps := []options.CompressionType{options.None, options.Snappy, options.ZSTD}
		if id, ok := table.ParseFileID(filepath.Base(p)); ok {
			if tm, ok := manifest.Tables[id]; ok {
				comps = []options.CompressionType{tm.Compression}
			}
		}
		for _, comp := range comps {
			s, e := scanTable(p, comp)
			if s.Problem == "" || comp == comps[0] {
				src, ents = s, e // a damaged table keeps what the first read got
			}
			if s.Problem == "" {
				break
			}
		}
		if src.Problem == "" {
			for _, e := range ents {
				put(e.key, e.ref)
			}
		} else {
			// What a damaged table yields may be garbage (a flipped index
			// byte can make up a key or a version): it may only add keys the
			// logs do not have, and never delete. A lost delete brings an
			// acked task back, which at-least-once allows.
			for _, e := range ents {
				if best[string(e.key)] == nil && !e.ref.del {
					put(e.key, e.ref)
				}
			}
		}
		rep.Files = append(rep.Files, src)
	}
	if err := writeRepaired(data, out, best, rep, log); err != nil {
		return rep, err
	}
	return rep, nil
}

// scanLogFile reads a .vlog or .mem entry by entry until its end or the
// first entry that fails its checksum.
func scanLogFile(path string, put func([]byte, *repairRef)) RepairSource {
	src := RepairSource{File: filepath.Base(path)}
	b, err := os.ReadFile(path)
	if err != nil {
		src.Problem = err.Error()
		return src
	}
	for off := badgerVlogHeader; off+2 <= len(b); {
		e, next, problem := parseLogEntry(b, off)
		if problem != "" {
			src.Problem = fmt.Sprintf("%s; %d bytes from there on skipped", problem, len(b)-off)
			break
		}
		if next == 0 {
			break // the zeroed, unwritten end of a preallocated file
		}
		if e.key != nil {
			e.ref.path = path
			put(e.key, e.ref)
			src.Entries++
		}
		off = next
	}
	return src
}

type logEntry struct {
	key []byte
	ref *repairRef // value at ref.off (in the buffer), ref.n bytes
	val []byte
}

// parseLogEntry decodes the Badger log entry at off (header: meta, user
// meta, uvarint key length, value length, expiry; key with version; value;
// CRC32C big endian). next is 0 at the zeroed end of a file.
func parseLogEntry(b []byte, off int) (e logEntry, next int, problem string) {
	meta := b[off]
	p := off + 2
	klen, n1 := binary.Uvarint(b[p:])
	if n1 <= 0 {
		return e, 0, fmt.Sprintf("unreadable entry header at byte %d", off)
	}
	vlen, n2 := binary.Uvarint(b[p+n1:])
	if n2 <= 0 {
		return e, 0, fmt.Sprintf("unreadable entry header at byte %d", off)
	}
	exp, n3 := binary.Uvarint(b[p+n1+n2:])
	if n3 <= 0 {
		return e, 0, fmt.Sprintf("unreadable entry header at byte %d", off)
	}
	if klen == 0 && meta == 0 {
		return e, 0, ""
	}
	h := 2 + n1 + n2 + n3
	if klen > 1<<16 || vlen > 1<<31 {
		return e, 0, fmt.Sprintf("entry at byte %d has impossible sizes", off)
	}
	end := off + h + int(klen) + int(vlen) + 4
	if end > len(b) {
		return e, 0, fmt.Sprintf("entry at byte %d runs past the end", off)
	}
	if crc32.Checksum(b[off:end-4], y.CastagnoliCrcTable) != binary.BigEndian.Uint32(b[end-4:]) {
		return e, 0, fmt.Sprintf("checksum mismatch at byte %d", off)
	}
	kts := b[off+h : off+h+int(klen)]
	if len(kts) <= 8 {
		return e, end, ""
	}
	r := &repairRef{ver: y.ParseTs(kts), del: meta&1 != 0, expires: exp}
	val := b[off+h+int(klen) : end-4]
	if meta&2 != 0 { // a value pointer (write-ahead log)
		if len(val) >= 12 {
			r.vp = &[3]uint32{binary.LittleEndian.Uint32(val), binary.LittleEndian.Uint32(val[4:]), binary.LittleEndian.Uint32(val[8:])}
		}
	} else {
		r.off, r.n = int64(off+h+int(klen)), int64(len(val))
	}
	return logEntry{key: y.ParseKey(kts), ref: r, val: val}, end, ""
}

// scanTable reads a table block by block (each checked) until its end or
// the first bad block.
type tableEntry struct {
	key []byte
	ref *repairRef
}

func scanTable(path string, comp options.CompressionType) (src RepairSource, out []tableEntry) {
	src = RepairSource{File: filepath.Base(path)}
	defer func() {
		if r := recover(); r != nil {
			src.Problem = fmt.Sprintf("unreadable after %d entries: %v", src.Entries, r)
		}
	}()
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		src.Problem = err.Error()
		return src, nil
	}
	t, err := table.OpenTable(mf, table.Options{ReadOnly: true, ChkMode: options.OnBlockRead, Compression: comp, BlockSize: 4 << 10})
	if err != nil {
		src.Problem = err.Error()
		return src, nil
	}
	defer t.Close(-1)
	it := t.NewIterator(0)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := append([]byte(nil), it.Key()...) // the iterator reuses its buffer
		vs := it.ValueCopy()
		r := &repairRef{ver: y.ParseTs(k), del: vs.Meta&1 != 0, expires: vs.ExpiresAt}
		if vs.Meta&2 != 0 {
			if len(vs.Value) >= 12 {
				r.vp = &[3]uint32{binary.LittleEndian.Uint32(vs.Value), binary.LittleEndian.Uint32(vs.Value[4:]), binary.LittleEndian.Uint32(vs.Value[8:])}
			}
		} else {
			r.inline = vs.Value
		}
		out = append(out, tableEntry{key: y.ParseKey(k), ref: r})
		src.Entries++
	}
	if n := int(t.KeyCount()); src.Entries < n {
		src.Problem = fmt.Sprintf("read stopped at entry %d of %d (a block failed its checksum)", src.Entries, n)
	} else if err := t.VerifyChecksum(); err != nil {
		src.Problem = fmt.Sprintf("checksum: %v", err)
	}
	return src, out
}

// value reads the value of a ref (checked when its entry was scanned, or
// now for a value pointer).
func (r *repairRef) value(data string) ([]byte, error) {
	switch {
	case r.inline != nil:
		return r.inline, nil
	case r.path != "":
		f, err := os.Open(r.path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		v := make([]byte, r.n)
		_, err = f.ReadAt(v, r.off)
		return v, err
	case r.vp != nil:
		p := filepath.Join(data, fmt.Sprintf("%06d.vlog", r.vp[0]))
		b, err := readRange(p, int64(r.vp[2]), int64(r.vp[1]))
		if err != nil {
			return nil, fmt.Errorf("value log %s: %w", filepath.Base(p), err)
		}
		e, _, problem := parseLogEntry(b, 0)
		if problem != "" || e.ref == nil || e.ref.ver != r.ver {
			return nil, fmt.Errorf("value log %s: entry at byte %d unreadable %s", filepath.Base(p), r.vp[2], problem)
		}
		return e.val, nil
	}
	return []byte{}, nil
}

func readRange(path string, off, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		return nil, err
	}
	return b, nil
}

// writeRepaired writes the live records into a fresh store at out.
func writeRepaired(data, out string, best map[string]*repairRef, rep *RepairReport, log *slog.Logger) error {
	db, err := badger.Open(badger.DefaultOptions(out).WithLogger(badgerLogger{log.With("component", "badger")}).
		WithMemTableSize(16 << 20).WithValueLogFileSize(64 << 20).WithValueThreshold(DefaultValueThreshold).WithNumVersionsToKeep(1).WithCompression(options.None))
	if err != nil {
		return fmt.Errorf("repair: open %s: %w", out, err)
	}
	wb := db.NewWriteBatch()
	var maxSeq, storedSeq uint64
	queues := map[string]bool{}
	metas := map[string]bool{}
	now := uint64(time.Now().Unix())
	keys := make([]string, 0, len(best))
	for k := range best {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var werr error
	set := func(k, v []byte) {
		if werr == nil {
			werr = wb.Set(k, v)
		}
	}
	for _, ks := range keys {
		r := best[ks]
		k := []byte(ks)
		if r.del || (r.expires != 0 && r.expires < now) {
			continue
		}
		v, verr := r.value(data)
		q, seq, isTask, isDead := splitQueueKey(k)
		if isTask || isDead {
			queues[q] = true
			maxSeq = max(maxSeq, seq)
		}
		switch {
		case verr != nil && isTask:
			frame, err := encodeFrame(&wirepb.DeadTask{Reason: "repair: task record unreadable: " + verr.Error(), DeadUnixMs: time.Now().UnixMilli(), DeadId: deadID(seq)})
			if err != nil {
				return err
			}
			set(deadKey(q, seq), frame)
			rep.NewDead++
			rep.Dead++
		case verr != nil:
			rep.Lost++
			log.Warn("repair: record unreadable", "key", fmt.Sprintf("%q", k), "err", verr)
		case isTask:
			set(k, v)
			rep.Tasks++
		case isDead:
			set(k, v)
			rep.Dead++
		case bytes.Equal(k, seqKey):
			if len(v) == 8 {
				storedSeq = binary.BigEndian.Uint64(v)
			}
		default:
			if len(k) > 0 && k[0] == pfxMeta {
				metas[string(k[1:])] = true
			}
			if r.expires != 0 && werr == nil { // kept settled tasks, replay ledger: keep their TTL
				werr = wb.SetEntry(&badger.Entry{Key: k, Value: v, ExpiresAt: r.expires})
			} else {
				set(k, v)
			}
			rep.Other++
		}
	}
	for q := range queues {
		if !metas[q] {
			meta, err := encodeFrame(&wirepb.NodeInfo{Name: q, StartedUnixMs: time.Now().UnixMilli()})
			if err != nil {
				return err
			}
			set(metaKey(q), meta)
			rep.Other++
		}
		rep.Queues = append(rep.Queues, q)
	}
	slices.Sort(rep.Queues)
	set(seqKey, binary.BigEndian.AppendUint64(nil, max(storedSeq, maxSeq+1)))
	if werr == nil {
		werr = wb.Flush()
	} else {
		wb.Cancel()
	}
	if err := errors.Join(werr, db.Close()); err != nil {
		return fmt.Errorf("repair: write %s: %w", out, err)
	}
	if old, err := os.ReadFile(filepath.Join(data, DamageLog)); err == nil {
		if err := os.WriteFile(filepath.Join(out, DamageLog), old, 0o644); err != nil {
			return err
		}
	}
	var lines []string
	for _, f := range rep.Files {
		if f.Problem != "" {
			lines = append(lines, fmt.Sprintf("repair: %s: %s", f.File, f.Problem))
		}
	}
	lines = append(lines, fmt.Sprintf("repair from %s: %d tasks, %d dead letters (%d unreadable tasks made dead letters), %d other records unreadable",
		data, rep.Tasks, rep.Dead, rep.NewDead, rep.Lost))
	return recordDamage(out, lines)
}

// splitQueueKey parses task and dead-letter keys.
func splitQueueKey(k []byte) (queue string, seq uint64, isTask, isDead bool) {
	if len(k) < 2 || (k[0] != pfxTask && k[0] != pfxDead) {
		return "", 0, false, false
	}
	n := int(k[1])
	switch {
	case k[0] == pfxTask && len(k) == 2+n+16:
		return string(k[2 : 2+n]), binary.BigEndian.Uint64(k[2+n+8:]), true, false
	case k[0] == pfxDead && len(k) == 2+n+8:
		return string(k[2 : 2+n]), binary.BigEndian.Uint64(k[2+n:]), false, true
	}
	return "", 0, false, false
}
