package mqnode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The ledger makes loss from a damaged store *reported* instead of silent.
//
// Badger checks what it reads, but some damage it repairs by cutting: a bad
// checksum in the write-ahead log (.mem) or the active value log ends the
// replay there, and the records after it are gone without a word. The
// ledger is a small side file, outside Badger, that holds for every queue a
// range [lo, hi] its record count (tasks + dead letters) must lie in. The
// writer appends the range of every queue a transaction touches before it
// commits (lo, hi = the count before and after), so whether the commit
// lands or not, and whether the process dies before or after it, the truth
// is inside the range; the next write narrows a committed range to the
// exact count. So a loss is found unless it is within the last commit that
// touched the queue. At start the node counts its keys: fewer than lo is
// loss, logged with the queue and how many, appended to DamageLog, and
// counted in stats (lost_total); more than hi means settlements were lost
// (tasks may be delivered again, which at-least-once allows) and is logged.
//
// The ledger is a detector, not a copy: it is never fsynced, and if it
// cannot be written it is removed, so a stale ledger never reports a loss
// that did not happen. Each record is framed with its length and a CRC32C;
// a torn or damaged tail ends the reading there.
const (
	ledgerFile = "mqnode.ledger"
	// DamageLog (in the data dir) lists every loss and damage the node
	// found at start, one line each, so a report outlives a restart.
	DamageLog = "mqnode-damage.log"

	ledgerCompactAt = 4 << 20
)

type ledger struct {
	path   string
	log    *slog.Logger
	f      *os.File
	size   int64
	counts map[string]int64 // committed record count per queue
	// settled: queues whose last range has since committed; the next write
	// narrows them to their exact count, at no extra write.
	settled map[string]bool
	broken  bool
}

// ledgerCheck is what a start found when it compared the store to the ledger.
type ledgerCheck struct {
	lost  map[string]int64 // queue → records missing
	extra map[string]int64 // queue → records above the range
	note  string           // ledger itself unreadable in part
}

// readLedger reads the last range of every queue; a bad record ends it.
func readLedger(path string) (map[string][2]int64, string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	out := map[string][2]int64{}
	off := 0
	for off < len(b) {
		if len(b)-off < 8 {
			return out, fmt.Sprintf("ledger ends in a torn record at byte %d", off), nil
		}
		n := int(binary.LittleEndian.Uint32(b[off:]))
		crc := binary.LittleEndian.Uint32(b[off+4:])
		body := b[off+8:]
		if n < 18 || n > len(body) || crc32.Checksum(body[:n], castagnoli) != crc {
			return out, fmt.Sprintf("ledger record at byte %d is damaged; checks cover the records before it", off), nil
		}
		body = body[:n]
		nl := int(binary.LittleEndian.Uint16(body))
		if 2+nl+16 != n {
			return out, fmt.Sprintf("ledger record at byte %d is malformed", off), nil
		}
		name := string(body[2 : 2+nl])
		lo := int64(binary.LittleEndian.Uint64(body[2+nl:]))
		hi := int64(binary.LittleEndian.Uint64(body[10+nl:]))
		out[name] = [2]int64{lo, hi}
		off += 8 + n
	}
	return out, "", nil
}

func appendRecord(buf []byte, name string, lo, hi int64) []byte {
	n := 2 + len(name) + 16
	start := len(buf)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(n))
	buf = binary.LittleEndian.AppendUint32(buf, 0)
	buf = binary.LittleEndian.AppendUint16(buf, uint16(len(name)))
	buf = append(buf, name...)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(lo))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(hi))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(buf[start+8:], castagnoli))
	return buf
}

// openLedger compares the store's counts to the ledger in dir, then starts
// a fresh ledger from the counts.
func openLedger(dir string, counts map[string]int64, log *slog.Logger) (*ledger, ledgerCheck, error) {
	path := filepath.Join(dir, ledgerFile)
	var chk ledgerCheck
	ranges, note, err := readLedger(path)
	if err != nil {
		chk.note = fmt.Sprintf("ledger unreadable: %v", err)
	} else {
		chk.note = note
	}
	for name, r := range ranges {
		got := counts[name]
		switch {
		case got < r[0]:
			if chk.lost == nil {
				chk.lost = map[string]int64{}
			}
			chk.lost[name] = r[0] - got
		case got > r[1]:
			if chk.extra == nil {
				chk.extra = map[string]int64{}
			}
			chk.extra[name] = got - r[1]
		}
	}
	l := &ledger{path: path, log: log, counts: map[string]int64{}, settled: map[string]bool{}}
	for k, v := range counts {
		l.counts[k] = v
	}
	if err := l.compact(); err != nil {
		return nil, chk, err
	}
	return l, chk, nil
}

// compact rewrites the ledger as one exact range per queue.
func (l *ledger) compact() error {
	names := make([]string, 0, len(l.counts))
	for k := range l.counts {
		names = append(names, k)
	}
	slices.Sort(names)
	var buf []byte
	for _, k := range names {
		buf = appendRecord(buf, k, l.counts[k], l.counts[k])
	}
	clear(l.settled)
	tmp := l.path + ".tmp"
	if err := os.WriteFile(tmp, buf, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, l.path); err != nil {
		return err
	}
	if l.f != nil {
		l.f.Close()
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	l.f, l.size = f, int64(len(buf))
	return nil
}

// pending is a transaction's count changes per queue.
type pending map[string]int64

// begin records the range of every queue ops touch, before their commit.
func (l *ledger) begin(ops []*writeOp) pending {
	if l == nil || l.broken {
		return nil
	}
	var p pending
	for _, op := range ops {
		for _, e := range op.fx {
			if d := e.stored + e.dead; d != 0 {
				if p == nil {
					p = pending{}
				}
				p[e.q.name] += d
			}
		}
	}
	if len(p) == 0 {
		return nil
	}
	var buf []byte
	for name := range l.settled {
		if _, again := p[name]; !again {
			buf = appendRecord(buf, name, l.counts[name], l.counts[name])
		}
	}
	clear(l.settled)
	for name, d := range p {
		cur := l.counts[name]
		buf = appendRecord(buf, name, min(cur, cur+d), max(cur, cur+d))
	}
	if _, err := l.f.Write(buf); err != nil {
		l.fail(err)
		return nil
	}
	l.size += int64(len(buf))
	return p
}

// end applies p once its commit is known; the ledger compacts when large.
func (l *ledger) end(p pending, committed bool) {
	if l == nil || l.broken || p == nil || !committed {
		return
	}
	for name, d := range p {
		l.counts[name] += d
		l.settled[name] = true
	}
	if l.size > ledgerCompactAt {
		if err := l.compact(); err != nil {
			l.fail(err)
		}
	}
}

// fail removes the ledger: better no check at the next start than a false one.
func (l *ledger) fail(err error) {
	l.broken = true
	if l.f != nil {
		l.f.Close()
	}
	rmErr := os.Remove(l.path)
	l.log.Error("ledger write failed; loss checks are off until the next start", "err", err, "removed", rmErr == nil)
}

func (l *ledger) close() {
	if l != nil && l.f != nil {
		l.f.Close()
	}
}

// recordDamage appends lines to the data dir's DamageLog.
func recordDamage(dir string, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(dir, DamageLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	ts := time.Now().UTC().Format(time.RFC3339)
	for _, ln := range lines {
		if _, err := io.WriteString(f, ts+" "+ln+"\n"); err != nil {
			return err
		}
	}
	return f.Sync()
}

// checkLedger compares the loaded queues to the ledger, reports what is
// missing (log, DamageLog, stats) and starts a fresh ledger.
func (s *store) checkLedger() error {
	counts := map[string]int64{}
	for name, q := range s.queues {
		counts[name] = q.stored + q.dead
	}
	l, chk, err := openLedger(s.cfg.DataDir, counts, s.log)
	if err != nil {
		return fmt.Errorf("%w: ledger: %w", ErrStorage, err)
	}
	s.ledger = l
	var lines []string
	if chk.note != "" {
		s.log.Warn("loss check incomplete", "why", chk.note)
		lines = append(lines, "ledger: "+chk.note)
	}
	for _, name := range sortedNames(chk.lost) {
		n := chk.lost[name]
		q := s.queues[name]
		if q == nil { // the queue itself is gone: keep it visible
			q = newQueue(s, name)
			s.queues[name] = q
		}
		q.c.lost.Add(uint64(n))
		s.log.Error("records lost from a damaged store: the queue holds fewer tasks and dead letters than it had",
			"queue", name, "missing", n, "found", counts[name], "damage_log", filepath.Join(s.cfg.DataDir, DamageLog))
		lines = append(lines, fmt.Sprintf("queue %s: %d records (tasks or dead letters) missing at start; %d found", name, n, counts[name]))
	}
	for _, name := range sortedNames(chk.extra) {
		s.log.Warn("store holds more records than it should: settlements were lost, some tasks may be delivered again",
			"queue", name, "extra", chk.extra[name])
		lines = append(lines, fmt.Sprintf("queue %s: %d more records than expected (settlements lost; redelivery)", name, chk.extra[name]))
	}
	if err := recordDamage(s.cfg.DataDir, lines); err != nil {
		s.log.Error("cannot write the damage log", "err", err)
	}
	return nil
}

func sortedNames(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
