package mesh

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// rejoinJoinLimit bounds the concurrent join attempts of one round.
const rejoinJoinLimit = 16

// knownSaveEvery is the least time between two writes of the members file.
const knownSaveEvery = time.Second

// loadKnownMembers reads Config.MembersFile into m.known (self excluded).
func (m *Mesh) loadKnownMembers() error {
	f, err := loadKnown(m.cfg.MembersFile)
	if err != nil {
		return fmt.Errorf("%w (delete %s to start this member afresh)", err, m.cfg.MembersFile)
	}
	self := m.meta.memberID()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range f.Members {
		if k.ID != self {
			m.known[k.ID] = k
		}
	}
	return nil
}

// KnownMembers returns the members remembered from the members file that
// this member has not met again since it started.
func (m *Mesh) KnownMembers() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Member
	for _, k := range m.known {
		if _, seen := m.members[k.ID]; !seen {
			out = append(out, Member{ID: k.ID, Meta: k.Meta, State: k.State, Addr: k.Addr, Since: k.Since})
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// rejoinTargets are the gossip addresses worth a join attempt: remembered
// members not met again, and members seen failed (a partition or a crash:
// when they are reachable again, a join merges the two sides). Members that
// left gracefully are not chased; they come back by joining themselves.
func (m *Mesh) rejoinTargets() []string {
	own := m.GossipAddr()
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	self := m.meta.memberID() // m.meta is written under m.mu (Leave)
	seen := map[string]bool{own: true}
	var out []string
	add := func(addr string) {
		if !seen[addr] {
			seen[addr] = true
			out = append(out, addr)
		}
	}
	for id, k := range m.known {
		if _, met := m.members[id]; met || now.Sub(m.started) > m.cfg.Retain {
			continue
		}
		add(k.Addr)
	}
	for id, mb := range m.members {
		if id != self && (mb.State == StateFailed || mb.State == StateSuspect) && now.Sub(mb.Since) <= m.cfg.Retain {
			add(mb.Addr)
		}
	}
	slices.Sort(out)
	return out
}

// othersAlive counts the alive members other than this one.
func (m *Mesh) othersAlive() int {
	self := m.Self().memberID()
	n := 0
	for _, mb := range m.Alive(nil) {
		if mb.ID != self {
			n++
		}
	}
	return n
}

// Ready reports whether this member is part of the mesh it belongs to: it
// is not ready while it sees no other alive member but knows members it
// should reach (its members file, or members it saw fail). reason says
// why when it is not.
func (m *Mesh) Ready() (ready bool, reason string) {
	if m.othersAlive() > 0 {
		return true, ""
	}
	if t := m.rejoinTargets(); len(t) > 0 {
		return false, fmt.Sprintf("isolated: none of the %d known member address(es) reachable; retrying", len(t))
	}
	return true, ""
}

// joinAny tries every address at once (each may take memberlist's TCP
// timeout when unreachable) and returns how many answered.
func (m *Mesh) joinAny(addrs []string) int {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
	)
	sem := make(chan struct{}, rejoinJoinLimit)
	for _, a := range addrs {
		wg.Add(1)
		sem <- struct{}{}
		go func(a string) {
			defer wg.Done()
			defer func() { <-sem }()
			n, _ := m.ml.Join([]string{a})
			mu.Lock()
			total += n
			mu.Unlock()
		}(a)
	}
	wg.Wait()
	return total
}

// markDirty asks the background loop to save the members file.
func (m *Mesh) markDirty() {
	select {
	case m.dirty <- struct{}{}:
	default:
	}
}

// saveKnownMembers writes the members file: every other member known now
// (within Retain) and every remembered member not met again, so a member
// restarted while isolated does not forget its mesh.
func (m *Mesh) saveKnownMembers() {
	if m.cfg.MembersFile == "" {
		return
	}
	self := m.Self().memberID()
	now := time.Now()
	f := knownFile{Self: self, Saved: now}
	m.mu.Lock()
	for id, mb := range m.members {
		if id == self || (mb.State != StateAlive && now.Sub(mb.Since) > m.cfg.Retain) {
			continue
		}
		f.Members = append(f.Members, knownMember{ID: id, Addr: mb.Addr, Meta: mb.Meta, State: mb.State, Since: mb.Since})
	}
	for id, k := range m.known {
		if _, met := m.members[id]; !met {
			f.Members = append(f.Members, k)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(f.Members, func(a, b knownMember) int { return strings.Compare(a.ID, b.ID) })
	if err := saveKnown(m.cfg.MembersFile, f); err != nil {
		m.log.Warn("could not save the known members", "file", m.cfg.MembersFile, "err", err)
	}
}

// initialJoin joins through the seeds and the remembered members. It
// returns whether any answered; with only seeds (a member new to the mesh)
// it keeps trying for Config.JoinWait, with remembered members for at most
// a few seconds (the rest happens in the background: see rejoinLoop).
func (m *Mesh) initialJoin(ctx context.Context, targets []string, remembered bool) (bool, error) {
	wait := m.cfg.JoinWait
	if remembered {
		wait = min(wait, m.cfg.RejoinInterval*3)
	}
	deadline := time.Now().Add(wait)
	for {
		if n := m.joinAny(targets); n > 0 {
			m.log.Info("joined the mesh", "gossip", m.GossipAddr(), "contacted", n, "tried", len(targets))
			return true, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false, ctx.Err()
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// rejoinLoop runs until Leave or Shutdown: it saves the members file when
// membership changed (at most once per knownSaveEvery), and retries the
// rejoin targets with exponential backoff (Config.RejoinInterval up to
// Config.RejoinMax). While the member sees no other alive member every
// failed attempt is a warning: it is cut off from its mesh and says so.
func (m *Mesh) rejoinLoop() {
	defer m.wg.Done()
	wait := m.cfg.RejoinInterval
	retry := time.NewTimer(wait)
	defer retry.Stop()
	var lastSave time.Time
	save := time.NewTimer(time.Hour)
	save.Stop()
	defer save.Stop()
	attempt := 0
	for {
		select {
		case <-m.stopc:
			return
		case <-m.dirty:
			if d := knownSaveEvery - time.Since(lastSave); d > 0 {
				save.Reset(d)
				continue
			}
			m.saveKnownMembers()
			lastSave = time.Now()
		case <-save.C:
			m.saveKnownMembers()
			lastSave = time.Now()
		case <-retry.C:
			targets := m.rejoinTargets()
			if len(targets) == 0 {
				wait, attempt = m.cfg.RejoinInterval, 0
				retry.Reset(wait)
				continue
			}
			isolated := m.othersAlive() == 0
			attempt++
			n := m.joinAny(targets)
			switch {
			case n > 0:
				m.log.Info("rejoined members", "contacted", n, "tried", len(targets), "attempt", attempt, "was_isolated", isolated)
				wait, attempt = m.cfg.RejoinInterval, 0
			case isolated:
				wait = min(wait*2, m.cfg.RejoinMax)
				m.log.Warn("NOT IN THE MESH: none of the known members is reachable; this node will not start a new mesh, retrying",
					"known", len(targets), "attempt", attempt, "next_in", wait, "addrs", targets)
			default:
				wait = min(wait*2, m.cfg.RejoinMax)
				m.log.Debug("failed members still unreachable", "addrs", targets, "next_in", wait)
			}
			retry.Reset(wait)
		}
	}
}

// ownAddr reports whether addr is this member's gossip address.
func (m *Mesh) ownAddr(addr string) bool {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	oh, op, _ := net.SplitHostPort(m.GossipAddr())
	return p == op && (h == oh || net.ParseIP(h).Equal(net.ParseIP(oh)))
}
