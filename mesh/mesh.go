package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/mqmesh/mqmesh/internal/lifecycle"
)

// Member is one member of the mesh as this member sees it.
type Member struct {
	ID    string    `json:"id"` // memberlist name: role:idc:name
	Meta  Meta      `json:"meta"`
	State State     `json:"state"`
	Addr  string    `json:"gossip_addr"` // host:port
	Since time.Time `json:"since"`       // last state change
}

// EventType is the kind of a membership event.
type EventType int

const (
	EventJoin   EventType = iota + 1 // a member joined (or rejoined)
	EventUpdate                      // a member's metadata changed
	EventLeave                       // a member left gracefully
	EventFail                        // a member was detected dead
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventFail:
		return "fail"
	}
	return "unknown"
}

// Event is a membership change.
type Event struct {
	Type   EventType
	Member Member
}

// Subscription receives membership events on C. Delivery never blocks the
// gossip loop: when C is full the event is dropped and counted.
type Subscription struct {
	C       <-chan Event
	c       chan Event
	dropped atomic.Uint64
	m       *Mesh
}

// Dropped is how many events were dropped because C was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close stops delivery (C is not closed, so readers select on their own
// stop signal too).
func (s *Subscription) Close() {
	s.m.mu.Lock()
	delete(s.m.subs, s)
	s.m.mu.Unlock()
}

// Mesh is this process's membership in the gossip mesh.
//
// Lifecycle (package internal/lifecycle): New, Start once; then Stop
// (graceful: a leave, others see "left") or Kill (as if crashed: others
// detect "failed"). Both are idempotent, safe before Start and in either
// order.
type Mesh struct {
	cfg  Config
	log  *slog.Logger
	ml   *memberlist.Memberlist
	life lifecycle.Guard

	mu      sync.Mutex
	meta    Meta
	members map[string]*Member
	leaving map[string]time.Time // leave intents received, by member id
	subs    map[*Subscription]struct{}
	// known are the members remembered from Config.MembersFile.
	known   map[string]knownMember
	started time.Time

	dirty chan struct{} // membership changed: save the members file
	stopc chan struct{} // closed by Stop / Kill: stops rejoinLoop
	wg    sync.WaitGroup

	keyring   *memberlist.Keyring // nil: gossip unencrypted or one fixed key
	watchStop chan struct{}       // closed to stop the keyring file watch
	watchDone chan struct{}
}

// msgLeaveIntent prefixes a direct message announcing a graceful leave.
const msgLeaveIntent = 'L'

// New checks cfg and returns a Mesh ready to Start.
func New(cfg Config) (*Mesh, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mesh: config: %w", err)
	}
	m := &Mesh{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "mesh", "member", cfg.Meta.memberID()),
		meta:    cfg.Meta,
		members: map[string]*Member{},
		leaving: map[string]time.Time{},
		subs:    map[*Subscription]struct{}{},
		known:   map[string]knownMember{},
		dirty:   make(chan struct{}, 1),
	}
	m.life.Name = "mesh"
	return m, nil
}

// Start creates the gossip endpoint and joins the mesh through the seeds
// and the members remembered in Config.MembersFile (any one is enough).
//
//   - Nothing to join (no seed, no remembered member): it starts a mesh.
//   - Only seeds (new to the mesh): it retries until Config.JoinWait, then
//     fails.
//   - Remembered members (it was in a mesh): if none answers within a few
//     seconds it runs isolated, never as a new mesh: Ready reports false, and
//     it keeps retrying in the background with backoff, warning on every
//     attempt, until one answers.
//
// In the background it then saves the members file as membership changes
// and retries members seen failed, so two sides of a healed partition
// merge again.
//
// A Start that fails leaves no gossip endpoint behind and may be retried
// (lifecycle contract).
func (m *Mesh) Start(ctx context.Context) error {
	return m.life.Start(ctx, func() error { return m.start(ctx) })
}

func (m *Mesh) start(ctx context.Context) (err error) {
	m.stopc = make(chan struct{})
	mc, err := m.cfg.memberlistConfig()
	if err != nil {
		return err
	}
	mc.Name = m.meta.memberID()
	mc.Delegate = delegate{m}
	mc.Events = events{m}
	if _, err := m.meta.encode(); err != nil {
		return err
	}
	if err := m.loadKnownMembers(); err != nil {
		return err
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("mesh: gossip on %s:%d: %w", m.cfg.BindAddr, m.cfg.BindPort, err)
	}
	m.mu.Lock()
	m.ml, m.started = ml, time.Now()
	m.keyring = mc.Keyring
	m.mu.Unlock()
	defer func() {
		if err != nil { // undo: a new Start may follow
			m.stopWatch()
			_ = ml.Shutdown()
			m.mu.Lock()
			m.ml, m.keyring = nil, nil
			m.mu.Unlock()
		}
	}()
	if m.cfg.KeyringFile != "" && mc.Keyring != nil {
		stop, done := make(chan struct{}), make(chan struct{})
		if err := m.watchKeyring(m.cfg.KeyringFile, stop, done); err != nil {
			return err
		}
		m.watchStop, m.watchDone = stop, done
	}
	var targets []string
	for _, s := range m.cfg.Seeds {
		if !m.ownAddr(s) && !slices.Contains(targets, s) {
			targets = append(targets, s)
		}
	}
	remembered := m.rejoinTargets()
	for _, a := range remembered {
		if !slices.Contains(targets, a) {
			targets = append(targets, a)
		}
	}
	switch {
	case len(targets) == 0:
		m.log.Info("started a new mesh", "gossip", m.GossipAddr())
	default:
		joined, err := m.initialJoin(ctx, targets, len(remembered) > 0)
		if !joined && len(remembered) == 0 {
			if cause := errors.Join(err, ctx.Err()); cause != nil {
				return fmt.Errorf("mesh: join %v: no seed answered within %s: %w", m.cfg.Seeds, m.cfg.JoinWait, cause)
			}
			return fmt.Errorf("mesh: join %v: no seed answered within %s", m.cfg.Seeds, m.cfg.JoinWait)
		}
		if !joined {
			m.log.Warn("NOT IN THE MESH: none of the members this node knew is reachable; running isolated (not ready) and retrying in the background; it will not start a new mesh",
				"gossip", m.GossipAddr(), "known", len(remembered), "file", m.cfg.MembersFile)
		}
	}
	m.saveKnownMembers()
	m.wg.Add(1)
	go m.rejoinLoop()
	return nil
}

// GossipAddr is this member's gossip address (host:port).
// Empty before Start.
func (m *Mesh) GossipAddr() string {
	m.mu.Lock()
	ml := m.ml
	m.mu.Unlock()
	if ml == nil {
		return ""
	}
	n := ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Self returns this member's own metadata.
func (m *Mesh) Self() Meta {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.meta
}

// UpdateMeta changes this member's metadata and gossips it.
func (m *Mesh) UpdateMeta(change func(*Meta)) error {
	m.mu.Lock()
	next := m.meta
	change(&next)
	next.Role, next.IDC, next.Name = m.meta.Role, m.meta.IDC, m.meta.Name // identity is fixed
	if _, err := next.encode(); err != nil {
		m.mu.Unlock()
		return err
	}
	m.meta = next
	ml := m.ml
	m.mu.Unlock()
	if ml == nil {
		return nil // gossiped at Start
	}
	return ml.UpdateNode(5 * time.Second)
}

// Members returns every known member (alive, and failed or left ones for
// Config.Retain), this one included, sorted by IDC, role, name.
func (m *Mesh) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	out := make([]Member, 0, len(m.members))
	for id, mb := range m.members {
		if mb.State != StateAlive && now.Sub(mb.Since) > m.cfg.Retain {
			delete(m.members, id)
			continue
		}
		out = append(out, *mb)
	}
	slices.SortFunc(out, func(a, b Member) int {
		if c := strings.Compare(a.Meta.IDC, b.Meta.IDC); c != 0 {
			return c
		}
		if c := strings.Compare(string(a.Meta.Role), string(b.Meta.Role)); c != 0 {
			return c
		}
		return strings.Compare(a.Meta.Name, b.Meta.Name)
	})
	return out
}

// Alive returns the alive members matching keep (nil: all).
func (m *Mesh) Alive(keep func(Member) bool) []Member {
	var out []Member
	for _, mb := range m.Members() {
		if mb.State == StateAlive && (keep == nil || keep(mb)) {
			out = append(out, mb)
		}
	}
	return out
}

// Subscribe returns a subscription to membership events with a buffer of
// the given size (at least 1).
func (m *Mesh) Subscribe(buffer int) *Subscription {
	c := make(chan Event, max(buffer, 1))
	s := &Subscription{C: c, c: c, m: m}
	m.mu.Lock()
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	return s
}

// Stop leaves the mesh gracefully (others see "left", not "failed"): it
// announces the leave, waits for it to spread until ctx ends or at most
// DefaultLeaveTimeout, and stops gossip. Idempotent; safe before Start.
func (m *Mesh) Stop(ctx context.Context) error {
	return m.life.Stop(func() error {
		timeout := DefaultLeaveTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, max(time.Until(dl), 0))
		}
		return m.leave(timeout)
	})
}

// leave announces a graceful leave, waits up to timeout for it to spread,
// and stops gossip.
func (m *Mesh) leave(timeout time.Duration) error {
	m.mu.Lock()
	m.meta.Leaving = true
	m.mu.Unlock()
	m.stopLoop()
	// Announce the intent first: memberlist reports leaves and deaths
	// through one callback, so the intent is how others tell them apart.
	// It goes twice: gossiped in the metadata, and sent directly (TCP) to
	// every member, so no member sees the leave before the intent.
	// A timeout here only means the broadcast did not finish (peers may be
	// stopping too): the leave still happened; it is logged, not returned.
	if timeout > 0 {
		if err := m.ml.UpdateNode(timeout / 4); err != nil {
			m.log.Debug("leave intent broadcast", "err", err)
		}
		m.sendLeaveIntent(timeout / 4)
		if err := m.ml.Leave(timeout / 2); err != nil {
			m.log.Warn("leave broadcast incomplete", "err", err)
		}
	}
	m.stopWatch()
	err := m.ml.Shutdown()
	m.log.Info("left the mesh")
	return err
}

func (m *Mesh) sendLeaveIntent(timeout time.Duration) {
	msg := append([]byte{msgLeaveIntent}, m.meta.memberID()...)
	// Addresses come from this mesh's own table: memberlist's node records
	// may be rewritten by its gossip goroutines while we send.
	self := m.meta.memberID()
	var targets []*memberlist.Node
	for _, mb := range m.Members() {
		if mb.ID == self || mb.State != StateAlive {
			continue
		}
		host, port, err := net.SplitHostPort(mb.Addr)
		p, perr := strconv.Atoi(port)
		if err != nil || perr != nil {
			continue
		}
		targets = append(targets, &memberlist.Node{Name: mb.ID, Addr: net.ParseIP(host), Port: uint16(p)})
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, n := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func(n *memberlist.Node) {
			defer wg.Done()
			defer func() { <-sem }()
			_ = m.ml.SendReliable(n, msg)
		}(n)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

// Kill stops gossip without a leave, as a crash would: others detect a
// failure (lifecycle contract). Idempotent; safe before Start.
func (m *Mesh) Kill() {
	m.life.Kill(func() {
		m.stopLoop()
		m.stopWatch()
		_ = m.ml.Shutdown()
	})
}

// stopLoop stops rejoinLoop and saves the members file a last time.
func (m *Mesh) stopLoop() {
	close(m.stopc)
	m.wg.Wait()
	m.saveKnownMembers()
}

// stopWatch ends the keyring file watch, if any.
func (m *Mesh) stopWatch() {
	if m.watchStop != nil {
		close(m.watchStop)
		<-m.watchDone
		m.watchStop = nil
	}
}

// emitLocked delivers an event to every subscriber without blocking.
func (m *Mesh) emitLocked(ev Event) {
	for s := range m.subs {
		select {
		case s.c <- ev:
		default:
			s.dropped.Add(1)
		}
	}
}

func (m *Mesh) observe(n *memberlist.Node, typ EventType) {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		m.log.Warn("ignoring member with bad metadata", "member", n.Name, "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mb := m.members[n.Name]
	if mb == nil {
		mb = &Member{ID: n.Name}
		m.members[n.Name] = mb
	}
	prev := mb.State
	mb.Meta = meta
	mb.Addr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	switch typ {
	case EventJoin, EventUpdate:
		mb.State = StateAlive
		if typ == EventJoin {
			delete(m.leaving, n.Name)
		}
	case EventLeave, EventFail:
		// memberlist reports both through NotifyLeave; the leaving flag
		// gossiped before a graceful leave tells them apart.
		typ = EventFail
		mb.State = StateFailed
		if _, said := m.leaving[n.Name]; meta.Leaving || said {
			delete(m.leaving, n.Name)
			typ = EventLeave
			mb.State = StateLeft
		}
	}
	if prev != mb.State {
		mb.Since = time.Now()
	}
	if n.Name != m.meta.memberID() {
		m.log.Debug("membership", "event", typ, "member", n.Name, "state", mb.State)
	}
	m.emitLocked(Event{Type: typ, Member: *mb})
	m.markDirty()
}

type events struct{ m *Mesh }

func (e events) NotifyJoin(n *memberlist.Node)   { e.m.observe(n, EventJoin) }
func (e events) NotifyLeave(n *memberlist.Node)  { e.m.observe(n, EventFail) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.m.observe(n, EventUpdate) }

type delegate struct{ m *Mesh }

func (d delegate) NodeMeta(limit int) []byte {
	d.m.mu.Lock()
	defer d.m.mu.Unlock()
	b, err := d.m.meta.encode()
	if err != nil || len(b) > limit {
		d.m.log.Error("member metadata too large", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}
func (d delegate) NotifyMsg(b []byte) {
	if len(b) > 1 && b[0] == msgLeaveIntent {
		d.m.mu.Lock()
		d.m.leaving[string(b[1:])] = time.Now()
		d.m.mu.Unlock()
	}
}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}
