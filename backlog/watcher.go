package backlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/fsnotify/fsnotify"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/backlog/backlogpb"
	"github.com/mqmesh/mqmesh/internal/lifecycle"
)

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	// IDC and Node place the worker: its IDC and the node on its host (""
	// on a worker-only host).
	IDC, Node string
	// Filters are applied at Start when FilterFile is empty.
	Filters Filters
	// FilterFile, when set, is loaded at Start and followed: the watcher
	// re-applies it whenever it changes (see Reload).
	FilterFile string
	// Logger receives the watcher's logs. Default slog.Default().
	Logger *slog.Logger
}

// Watcher feeds a View from NATS: one subscription per tier of its
// filters. Callbacks only decode and apply (a map update under a mutex);
// they never block the NATS read loop.
//
// Lifecycle (package internal/lifecycle): Start subscribes (and follows
// the filter file); Stop and Kill are the same here (unsubscribe, stop
// following the file), idempotent and safe before Start. Apply switches
// the filters of a running watcher.
type Watcher struct {
	nc        *nats.Conn
	view      *View
	idc, node string
	cfg       WatcherConfig
	log       *slog.Logger
	life      lifecycle.Guard

	mu      sync.Mutex
	subs    []*nats.Subscription
	filters Filters
	path    string
	bad     uint64

	fw   *fsnotify.Watcher
	stop chan struct{}
	wg   sync.WaitGroup
}

// NewWatcher returns a watcher that feeds view over nc; Start subscribes.
func NewWatcher(nc *nats.Conn, view *View, cfg WatcherConfig) *Watcher {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Watcher{nc: nc, view: view, idc: cfg.IDC, node: cfg.Node, cfg: cfg, log: cfg.Logger.With("component", "backlog-watcher")}
	w.life.Name = "backlog: watcher"
	return w
}

// Start subscribes to the configured filters (or loads the filter file,
// applies it and follows it). A bad filter or file fails Start and
// subscribes nothing.
func (w *Watcher) Start(ctx context.Context) error {
	return w.life.Start(ctx, func() error {
		w.stop = make(chan struct{})
		if w.cfg.FilterFile != "" {
			return w.watchFile(w.cfg.FilterFile)
		}
		return w.apply(w.cfg.Filters)
	})
}

// Stop unsubscribes and stops following the file. Idempotent; safe before
// Start.
func (w *Watcher) Stop(ctx context.Context) error {
	w.Kill()
	return nil
}

// Kill is Stop: a watcher has nothing to leave or drain.
func (w *Watcher) Kill() {
	w.life.Kill(func() {
		close(w.stop)
		w.mu.Lock()
		fw := w.fw
		subs := w.subs
		w.subs, w.fw = nil, nil
		w.mu.Unlock()
		if fw != nil {
			fw.Close()
		}
		w.wg.Wait()
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	})
}

// View returns the view the watcher feeds.
func (w *Watcher) View() *View { return w.view }

// Apply validates f and switches the subscriptions of a running watcher
// to it: new ones are in place before the old ones go. A bad filter
// changes nothing.
func (w *Watcher) Apply(f Filters) error {
	if st := w.life.State(); st != lifecycle.Running {
		return fmt.Errorf("backlog: watcher %s: Apply needs a started watcher", st)
	}
	return w.apply(f)
}

func (w *Watcher) apply(f Filters) error {
	subs, err := f.resolve(w.idc, w.node)
	if err != nil {
		return fmt.Errorf("backlog: filters: %w", err)
	}
	var tiers []Tier
	for _, s := range subs {
		tiers = append(tiers, s.tier)
	}
	w.view.AllowTiers(tiers...)
	var fresh []*nats.Subscription
	for _, s := range subs {
		tier, summary := s.tier, s.pattern.Summary
		sub, err := w.nc.Subscribe(s.pattern.Text, func(m *nats.Msg) {
			if summary {
				w.receiveSummary(tier, m)
			} else {
				w.receive(tier, m)
			}
		})
		if err != nil {
			for _, f := range fresh {
				_ = f.Unsubscribe()
			}
			return fmt.Errorf("backlog: subscribe %s: %w", s.pattern.Text, err)
		}
		fresh = append(fresh, sub)
	}
	// Ask the publishers to re-send their state now rather than at their
	// next heartbeat; then make sure the subscriptions are in place.
	for _, s := range subs {
		if s.tier != TierHost || w.node != "" {
			_ = w.nc.Publish(SyncSubject(s.tier, w.idc, w.node), nil)
		}
	}
	if err := w.nc.Flush(); err != nil {
		w.log.Warn("flush after subscribe", "err", err)
	}
	w.mu.Lock()
	old := w.subs
	w.subs, w.filters = fresh, f
	var filters [NumTiers]*TierFilter
	for _, s := range subs {
		flt := s.filter
		filters[s.tier] = &flt
	}
	// Entries of tiers no longer subscribed leave the view now.
	w.view.SubscribeTiers(filters)
	w.mu.Unlock()
	for _, s := range old {
		_ = s.Unsubscribe()
	}
	for _, s := range subs {
		w.log.Info("subscribed", "tier", s.tier, "subject", s.pattern.Text, "min_backlog", s.filter.MinBacklog, "max_rate", s.filter.MaxRate)
	}
	return nil
}

// Filters returns the filters in force.
func (w *Watcher) Filters() Filters {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.filters
}

// Malformed is how many notices were dropped as malformed.
func (w *Watcher) Malformed() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bad
}

func (w *Watcher) receive(tier Tier, m *nats.Msg) {
	addr, err := ParseSubject(m.Subject)
	var n backlogpb.Notice
	if err == nil {
		err = proto.Unmarshal(m.Data, &n)
	}
	if err == nil && (addr.Tier != tier || addr.IDC != n.Idc || addr.Node != n.Node || addr.Queue != n.Queue) {
		err = errors.New("notice does not match its subject")
	}
	if err != nil {
		w.mu.Lock()
		w.bad++
		w.mu.Unlock()
		w.log.Debug("dropped malformed backlog notice", "subject", m.Subject, "err", err)
		return
	}
	w.view.Apply(tier, &n)
}

func (w *Watcher) receiveSummary(tier Tier, m *nats.Msg) {
	var sum backlogpb.Summary
	err := proto.Unmarshal(m.Data, &sum)
	if err == nil && m.Subject != SummarySubject(tier, sum.Idc, int(sum.Shard)) {
		err = errors.New("summary does not match its subject")
	}
	if err != nil {
		w.mu.Lock()
		w.bad++
		w.mu.Unlock()
		w.log.Debug("dropped malformed backlog summary", "subject", m.Subject, "err", err)
		return
	}
	w.view.ApplySummary(tier, &sum)
}

// watchFile loads the filter file, applies it, and reloads it whenever it
// changes. A bad file is refused with a logged error and the filters in
// force stay. Reload can also be triggered by hand (SIGHUP).
func (w *Watcher) watchFile(path string) error {
	f, err := LoadFilters(path)
	if err != nil {
		return err
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("backlog: watch %s: %w", path, err)
	}
	// Watch the directory: editors and config managers replace files.
	if err := fw.Add(filepath.Dir(path)); err != nil {
		fw.Close()
		return fmt.Errorf("backlog: watch %s: %w", path, err)
	}
	if err := w.apply(f); err != nil {
		fw.Close()
		return err
	}
	w.mu.Lock()
	w.path, w.fw = path, fw
	w.mu.Unlock()
	w.wg.Add(1)
	go w.watchLoop(fw, filepath.Clean(path))
	return nil
}

func (w *Watcher) watchLoop(fw *fsnotify.Watcher, path string) {
	defer w.wg.Done()
	for {
		select {
		case <-w.stop:
			return
		case ev, ok := <-fw.Events:
			if !ok {
				return
			}
			if filepath.Clean(ev.Name) == path && (ev.Has(fsnotify.Write) || ev.Has(fsnotify.Create)) {
				_ = w.Reload()
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return
			}
			w.log.Warn("filter file watch", "err", err)
		}
	}
}

// Reload re-reads the watched filter file. On error the old filters stay.
func (w *Watcher) Reload() error {
	w.mu.Lock()
	path := w.path
	w.mu.Unlock()
	if path == "" {
		return errors.New("backlog: no filter file to reload")
	}
	f, err := LoadFilters(path)
	if err == nil {
		err = w.Apply(f)
	}
	if err != nil {
		w.log.Error("filter file refused; the previous filters stay in force", "path", path, "err", err)
		return err
	}
	w.log.Info("filter file reloaded", "path", path)
	return nil
}

// Config returns the watcher's configuration.
func (w *Watcher) Config() WatcherConfig { return w.cfg }
