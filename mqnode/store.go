package mqnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/mqmesh/mqmesh/mqnode/throttle"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// store is one node's durable task store: Badger plus the in-memory queue
// state (ready windows, leases, counters). All writes go through one writer
// goroutine that groups concurrent operations into one Badger transaction and
// so one fsync (group commit); see writer.go.
//
// Lock order: store.qmu → queue.mu → leaseTable.mu → store.clockMu, and
// queue.mu → Throttle.mu → store.clockMu (the throttle's clock is nowMs). The
// writer goroutine takes queue.mu and leaseTable.mu only in after-commit hooks,
// never while it holds a transaction open for reads by others.
type store struct {
	cfg Config
	log *slog.Logger
	db  *badger.DB
	seq *badger.Sequence

	w *writer
	// gcMu keeps value-log GC and our commits apart: Badger v4.9's GC reads
	// the memtable's max version without the lock its writes take (a data
	// race the race detector reports), so GC runs only between write
	// groups. Writes wait while a GC round rewrites a file.
	gcMu sync.Mutex

	clockMu     sync.Mutex
	lastMs      int64 // monotonic ms clock (guarded by clockMu)
	pendingFrom int64 // first stamp of the write group in flight, 0 = none

	qmu    sync.RWMutex
	queues map[string]*queue

	leases *leaseTable
	th     *throttle.Throttle
	topics *topicTable // topic.go
	disk   *diskWatch
	ledger *ledger // written by the writer goroutine only

	bufTotal atomic.Int64               // bytes in all queues' ready windows (budget.go)
	nQueues  atomic.Int64               // queues in the table (newQueue .. stop)
	obs      *observer                  // metrics and trace hooks (observe.go)
	repl     atomic.Pointer[replicator] // set while replication runs (replicate.go)

	started time.Time

	bg     sync.WaitGroup
	stopBg chan struct{}
	once   sync.Once
}

func openStore(cfg Config) (*store, error) {
	opts := badger.DefaultOptions(cfg.DataDir).
		WithLogger(badgerLogger{cfg.Logger.With("component", "badger")}).
		WithSyncWrites(cfg.Durability == DurabilityFsync).
		WithMemTableSize(cfg.MemTableSize).
		WithNumMemtables(2).
		WithNumCompactors(2).
		WithBlockCacheSize(cfg.BlockCacheSize).
		WithIndexCacheSize(cfg.IndexCacheSize).
		WithValueThreshold(cfg.ValueThreshold).
		WithValueLogFileSize(cfg.ValueLogFileSize).
		WithCompression(options.None).
		WithNumVersionsToKeep(1).
		WithDetectConflicts(false)
	if err := checkDiskBeforeOpen(cfg); err != nil {
		return nil, err
	}
	db, err := openBadger(opts)
	if err != nil {
		return nil, err
	}
	seq, err := db.GetSequence(seqKey, 10000)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: sequence: %w", ErrStorage, err)
	}
	s := &store{
		cfg:     cfg,
		log:     cfg.Logger,
		db:      db,
		seq:     seq,
		queues:  map[string]*queue{},
		started: cfg.now(),
		stopBg:  make(chan struct{}),
		disk:    newDiskWatch(cfg.DataDir, cfg.DiskReserve),
	}
	var diskErr string
	s.diskTick(&diskErr)
	s.leases = newLeaseTable(s)
	s.th = throttle.New(cfg.Throttle, cfg.IDC+"."+cfg.Name, s.nowMs)
	if err := s.loadQueues(); err != nil {
		seq.Release()
		db.Close()
		return nil, err
	}
	if err := s.checkLedger(); err != nil {
		seq.Release()
		db.Close()
		return nil, err
	}
	if s.topics, err = loadTopics(s); err != nil {
		seq.Release()
		db.Close()
		return nil, err
	}
	s.obs = newObserver(s)
	s.w = newWriter(s)
	s.goBg(s.leases.run)
	s.goBg(s.runGC)
	s.goBg(s.runEvict)
	s.goBg(s.runDiskWatch)
	s.goBg(s.runTotals)
	if !cfg.Throttle.Disabled && !cfg.Throttle.CPU.Disabled {
		s.goBg(s.sampleCPU)
	}
	return s, nil
}

func (s *store) goBg(f func()) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f()
	}()
}

// close stops background work, drains the writer and closes Badger. Leases
// are dropped: their tasks are ready again on the next open. Safe twice.
func (s *store) close() error {
	var err error
	s.once.Do(func() {
		close(s.stopBg)
		s.bg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if terr := s.saveTotals(ctx, nil); terr != nil {
			s.log.Warn("queue totals not saved at stop", "err", terr)
		}
		cancel()
		s.obs.close()
		s.w.close()
		s.ledger.close()
		s.qmu.Lock()
		for _, q := range s.queues {
			q.stop()
		}
		s.qmu.Unlock()
		err = errors.Join(s.seq.Release(), s.db.Close())
	})
	return err
}

// nowMs is the monotonic millisecond clock used for stamps and ages.
func (s *store) nowMs() int64 {
	s.clockMu.Lock()
	defer s.clockMu.Unlock()
	return s.tickLocked()
}

func (s *store) tickLocked() int64 {
	if t := s.cfg.now().UnixMilli(); t > s.lastMs {
		s.lastMs = t
	}
	return s.lastMs
}

// horizon is the largest readyAt a cursor scan may pass. Keys written by the
// group in flight (or any later one) have readyAt >= its first stamp, and a
// larger seq than any committed key; scanning only below that stamp means
// the cursor never moves past a key that commits later.
func (s *store) horizon() int64 {
	s.clockMu.Lock()
	defer s.clockMu.Unlock()
	if s.pendingFrom != 0 {
		return s.pendingFrom - 1
	}
	return s.tickLocked()
}

func (s *store) beginGroup() {
	s.clockMu.Lock()
	s.pendingFrom = s.tickLocked()
	s.clockMu.Unlock()
}

func (s *store) endGroup() {
	s.clockMu.Lock()
	s.pendingFrom = 0
	s.clockMu.Unlock()
}

func (s *store) runGC() {
	if s.cfg.GCInterval <= 0 {
		return
	}
	t := time.NewTicker(s.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopBg:
			return
		case <-t.C:
			n := 0
			for s.gcOnce() == nil {
				n++
				select {
				case <-s.stopBg:
					return
				default:
				}
			}
			if n > 0 {
				s.log.Debug("value log gc", "rewritten", n)
			}
		}
	}
}

func (s *store) gcOnce() error {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	return s.db.RunValueLogGC(0.5)
}

// loadQueues rebuilds the in-memory queue table from the metadata keys and
// counts each queue's stored and dead records (keys only, no values).
func (s *store) loadQueues() error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxMeta}})
		var names []string
		for it.Rewind(); it.Valid(); it.Next() {
			names = append(names, string(it.Item().Key()[1:]))
		}
		it.Close()
		now := s.cfg.now().UnixMilli()
		for _, name := range names {
			q := newQueue(s, name)
			q.persisted.Store(true)
			q.touch(now)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: queuePrefix(pfxTask, name)})
			for it.Rewind(); it.Valid(); it.Next() {
				q.stored++
				if readyAt, _, err := parseTaskKey(name, it.Item().Key()); err == nil && readyAt > now {
					q.delayed[bucketOf(readyAt, now)]++
				}
			}
			it.Close()
			q.dead = countKeys(txn, queuePrefix(pfxDead, name))
			s.loadTotals(txn, q)
			q.kept.load(txn, name, q.cfg.KeepSettled)
			s.queues[name] = q
		}
		return nil
	})
}

func countKeys(txn *badger.Txn, prefix []byte) int64 {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	var n int64
	for it.Rewind(); it.Valid(); it.Next() {
		n++
	}
	return n
}

// queue returns the named queue, creating it when create is true and the
// config allows. A created queue is made durable before it is returned.
func (s *store) queue(ctx context.Context, name string, create bool) (*queue, error) {
	s.qmu.RLock()
	q := s.queues[name]
	if q != nil && create {
		q.touch(s.nowMs())
	}
	s.qmu.RUnlock()
	if q != nil {
		return q, nil
	}
	_, declared := s.cfg.Queues[name]
	if !create || (!*s.cfg.AutoCreateQueues && !declared) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownQueue, name)
	}
	s.qmu.Lock()
	q = s.queues[name]
	if q == nil {
		if err := s.createAllowedLocked(name); err != nil {
			s.qmu.Unlock()
			return nil, err
		}
		q = newQueue(s, name)
		s.queues[name] = q
	}
	q.touch(s.nowMs())
	s.qmu.Unlock()
	if !q.persisted.Load() {
		meta, err := encodeFrame(&wirepb.NodeInfo{Name: name, StartedUnixMs: s.nowMs()})
		if err != nil {
			return nil, err
		}
		err = s.w.do(ctx, &writeOp{prepare: func(w *wtx) error {
			w.set(metaKey(name), meta)
			return nil
		}})
		if err != nil {
			return nil, err
		}
		q.persisted.Store(true)
	}
	return q, nil
}

func (s *store) queueNames() []string {
	s.qmu.RLock()
	defer s.qmu.RUnlock()
	names := make([]string, 0, len(s.queues))
	for n := range s.queues {
		names = append(names, n)
	}
	return names
}

// badgerLogger routes Badger's logs to slog (warnings and errors only).
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Debugf(string, ...any)       {}
