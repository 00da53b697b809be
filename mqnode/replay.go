package mqnode

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Replay re-enqueues settled tasks kept by keep_settled (settled.go) as new
// tasks of the same queue: new ids, payload, headers and max attempts of the
// original, attempts and retention restarted. Each new task carries
//
//	mqmesh-replay-of:   id of the settled task it copies
//	mqmesh-replay-root: id of the first task of the chain (a replay of a replay keeps it)
//	mqmesh-replay-id:   the replay run
//
// A replay run is named by its replay id. The ledger key
// R|len|queue|replay id|0|root id, written in the same transaction as the
// new task, makes a run idempotent: a record whose root is in the ledger is
// counted as already replayed and skipped, so repeating a run (or a run
// that was cut short) adds only what is missing, and a run never replays
// both a task and an earlier replay of it.
const (
	HeaderReplayOf   = "mqmesh-replay-of"
	HeaderReplayRoot = "mqmesh-replay-root"
	HeaderReplayID   = "mqmesh-replay-id"

	pfxReplay = 'R'

	// DefaultReplayChunk is how many tasks one replay request re-enqueues
	// (one transaction); maxReplayScan bounds the records it reads.
	DefaultReplayChunk = 500
	maxReplayScan      = 20000
	maxReplayIDLen     = 128
)

func replayKey(queue, replayID, root string) []byte {
	b := append(queuePrefix(pfxReplay, queue), replayID...)
	b = append(b, 0)
	return append(b, root...)
}

// replayCandidate is one settled record chosen for a chunk.
type replayCandidate struct {
	key  []byte
	task *wirepb.Task
	root string
}

// replay handles one chunk of a replay request.
func (s *store) replay(ctx context.Context, req *wirepb.ReplayRequest) (*wirepb.ReplayReply, error) {
	if err := subject.Validate("queue", req.Queue); err != nil {
		return nil, err
	}
	if req.ReplayId == "" || len(req.ReplayId) > maxReplayIDLen || bytes.IndexByte([]byte(req.ReplayId), 0) >= 0 {
		return nil, fmt.Errorf("%w: replay_id must be 1..%d bytes without NUL", ErrBadRequest, maxReplayIDLen)
	}
	for _, f := range req.Filters {
		if f.GetHeader() == "" {
			return nil, fmt.Errorf("%w: filter with an empty header name", ErrBadRequest)
		}
	}
	q, err := s.queue(ctx, req.Queue, false)
	if err != nil {
		return nil, err
	}
	now := s.nowMs()
	rep := &wirepb.ReplayReply{KeepMs: max(q.cfg.KeepSettled.Milliseconds(), 0)}
	if q.cfg.KeepSettled <= 0 {
		return nil, fmt.Errorf("%w: queue %q does not keep settled tasks (keep_settled is 0); nothing can be replayed", ErrBadRequest, q.name)
	}
	until := req.UntilUnixMs
	if until == 0 {
		until = now
	}
	if req.SinceUnixMs < 0 || until < req.SinceUnixMs {
		return nil, fmt.Errorf("%w: span since %d until %d is empty or negative", ErrBadRequest, req.SinceUnixMs, until)
	}
	if rep.WindowFromUnixMs, rep.OldestUnixMs, err = s.settledWindow(q, now); err != nil {
		return nil, err
	}
	if until < rep.WindowFromUnixMs {
		return nil, fmt.Errorf("%w: span ends %s, before queue %q's kept window (keep_settled %s) reaches back to %s",
			ErrNotFound, fmtMs(until), q.name, q.cfg.KeepSettled, fmtMs(rep.WindowFromUnixMs))
	}
	limit := int(req.Limit)
	if limit <= 0 || limit > s.cfg.MaxEnqueueBatch {
		limit = min(DefaultReplayChunk, s.cfg.MaxEnqueueBatch)
	}
	cands, next, err := s.replayScan(q, req, until, limit, rep)
	if err != nil {
		return nil, err
	}
	rep.Next = next
	if err := s.replayWrite(ctx, q, req, cands, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// replayScan reads settled records from the cursor (or since) to until and
// returns up to limit that match the filters, with the cursor to go on from
// (nil at the end). Within one chunk a root is taken once.
func (s *store) replayScan(q *queue, req *wirepb.ReplayRequest, until int64, limit int, rep *wirepb.ReplayReply) ([]replayCandidate, []byte, error) {
	var cands []replayCandidate
	var next, lastKey []byte
	seen := map[string]bool{}
	start := settledKeyFloor(q.name, req.SinceUnixMs)
	if len(req.After) > 0 {
		if _, err := settledKeyTime(q.name, req.After); err != nil {
			return nil, nil, fmt.Errorf("%w: bad replay cursor", ErrBadRequest)
		}
		start = append(bytes.Clone(req.After), 0) // just past it
	}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: queuePrefix(pfxSettled, q.name), PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(start); it.Valid(); it.Next() {
			item := it.Item()
			at, err := settledKeyTime(q.name, item.Key())
			if err != nil {
				return err
			}
			if at > until {
				return nil
			}
			if len(cands) == limit || rep.Scanned == maxReplayScan {
				next = lastKey // the next chunk starts just past the last record read
				return nil
			}
			lastKey = item.KeyCopy(nil)
			rep.Scanned++
			raw, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			var st wirepb.SettledTask
			if derr := decodeFrame(raw, &st); derr != nil || st.Task == nil {
				s.log.Warn("unreadable settled record skipped by replay", "queue", q.name, "key", item.Key(), "err", derr)
				continue
			}
			if !headersMatch(st.Task.Headers, req.Filters) {
				continue
			}
			rep.Matched++
			root := st.Task.Headers[HeaderReplayRoot]
			if root == "" {
				root = st.Task.Id
			}
			if seen[root] {
				rep.Already++
				continue
			}
			seen[root] = true
			cands = append(cands, replayCandidate{key: lastKey, task: st.Task, root: root})
		}
		return nil
	})
	return cands, next, storageErr(err)
}

// replayWrite re-enqueues the candidates not in the ledger, with their
// ledger entries, in one transaction (a dry run only reads the ledger).
func (s *store) replayWrite(ctx context.Context, q *queue, req *wirepb.ReplayRequest, cands []replayCandidate, rep *wirepb.ReplayReply) error {
	if len(cands) == 0 {
		return nil
	}
	// The ledger outlives every record that could name the same root: the
	// originals (kept keep) and the replays themselves (settled later).
	ledgerTTL := 2*q.cfg.KeepSettled + time.Hour
	var enqueued, already uint64
	var items []*wirepb.EnqueueItem
	var origs []string
	var results []*wirepb.EnqueueResult
	prepare := func(w *wtx) error {
		enqueued, already = 0, 0
		items, origs = items[:0], origs[:0]
		var roots []string
		for _, c := range cands {
			v, err := w.get(replayKey(q.name, req.ReplayId, c.root))
			if err != nil {
				return storageErr(err)
			}
			if v != nil {
				already++
				continue
			}
			h := maps.Clone(c.task.Headers)
			if h == nil {
				h = map[string]string{}
			}
			h[HeaderReplayOf] = c.task.Id
			h[HeaderReplayRoot] = c.root
			h[HeaderReplayID] = req.ReplayId
			items = append(items, &wirepb.EnqueueItem{Payload: c.task.Payload, Headers: h, MaxAttempts: c.task.MaxAttempts})
			roots = append(roots, c.root)
			origs = append(origs, c.task.Id)
		}
		enqueued = uint64(len(items))
		if req.DryRun || len(items) == 0 {
			return nil
		}
		res, err := w.putTasks(q, items, "")
		if err != nil {
			return err
		}
		results = res
		for i, r := range res {
			w.setTTL(replayKey(q.name, req.ReplayId, roots[i]), []byte(r.Id), ledgerTTL)
		}
		return nil
	}
	if !req.DryRun {
		// A replay is an enqueue: below the disk reserve it answers
		// DISK_FULL like every other (ops.go admitItems), writing nothing.
		if err := s.disk.admit(); err != nil {
			return err
		}
	}
	if req.DryRun {
		err := s.db.View(func(txn *badger.Txn) error { return prepare(&wtx{s: s, txn: txn}) })
		if err != nil {
			return storageErr(err)
		}
	} else {
		op := &writeOp{prepare: prepare, after: func() {
			q.c.enqueued.add(s.nowMs(), int64(enqueued))
			s.obs.replayed(q.name, items, results, origs)
		}}
		if err := s.w.do(ctx, op); err != nil {
			return err
		}
	}
	rep.Enqueued += enqueued
	rep.Already += already
	return nil
}

// headersMatch reports whether h has every filter's header with its value.
func headersMatch(h map[string]string, filters []*wirepb.HeaderMatch) bool {
	for _, f := range filters {
		if v, ok := h[f.GetHeader()]; !ok || v != f.GetValue() {
			return false
		}
	}
	return true
}

func fmtMs(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339) }

// Trace event kinds of a replay: the link in both directions.
const (
	TraceReplayOf = "replay-of" // on the new task: Parent = the task it replays
	TraceReplayed = "replayed"  // on the original: Child = its replay
)

// replayed records the enqueue of replayed tasks (metrics and trace) and
// links each to its original in the trace, both ways.
func (o *observer) replayed(queue string, items []*wirepb.EnqueueItem, res []*wirepb.EnqueueResult, origs []string) {
	if o == nil {
		return
	}
	o.enqueued(queue, items, res, time.Time{}, "", "")
	now := time.Now().UnixMilli()
	for i, r := range res {
		if i >= len(origs) || r.Duplicate {
			continue
		}
		o.tr.record(&TraceEvent{TimeUnixMs: now, Kind: TraceReplayOf, TaskId: r.Id, Queue: queue, Parent: origs[i]})
		o.tr.record(&TraceEvent{TimeUnixMs: now, Kind: TraceReplayed, TaskId: origs[i], Queue: queue, Child: r.Id})
	}
}
