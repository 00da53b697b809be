package mqnode

import (
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode/throttle"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// UsageSubject is where node name of idc publishes its backend usage for
// the mesh-wide budgets (a wirepb.UsageReport); every node subscribes to
// UsageSubjectAll. See package throttle.
func UsageSubject(idc, name string) string { return "thr.usage." + idc + "." + name }

// UsageSubjectAll matches every node's usage reports.
const UsageSubjectAll = "thr.usage.>"

// sampleCPU feeds the CPU throttle until the store stops: the node's own
// starvation (cpu.signal starvation, the default) or the host's CPU usage
// (cpu.signal host).
func (s *store) sampleCPU() {
	every := s.cfg.Throttle.CPU.Interval
	t := time.NewTicker(every)
	defer t.Stop()
	host := s.cfg.Throttle.CPU.Signal == throttle.SignalHost
	cpu, starved := s.cfg.CPUSampler, s.cfg.StarvationSampler
	// prime: the first reading has no interval
	if host {
		_, _ = cpu()
	} else {
		_, _ = starved()
	}
	warned := false
	for {
		select {
		case <-s.stopBg:
			return
		case <-t.C:
		}
		var err error
		if host {
			var u float64
			if u, err = cpu(); err == nil {
				s.th.SampleCPU(u)
			}
		} else {
			var d time.Duration
			if d, err = starved(); err == nil {
				s.th.SampleStarvation(d)
			}
		}
		if err != nil && !warned {
			s.log.Warn("cannot read the cpu signal; the cpu throttle is idle", "signal", s.cfg.Throttle.CPU.Signal, "err", err)
			warned = true
		}
	}
}

// shareUsage runs the budget exchange: every share interval it recomputes
// this node's shares and publishes its usage; it records the reports of
// the other nodes. It returns when stop is closed.
func (n *Node) shareUsage(nc *nats.Conn, stop <-chan struct{}) {
	th := n.st.th
	if th.Config().Disabled || len(th.Config().Backends) == 0 {
		return
	}
	sub, err := nc.Subscribe(UsageSubjectAll, func(m *nats.Msg) {
		node, us, err := decodeUsage(m.Data)
		if err != nil {
			n.log.Debug("bad usage report", "subject", m.Subject, "err", err)
			return
		}
		th.Peer(node, us)
	})
	if err != nil {
		n.log.Error("cannot subscribe to usage reports; budgets are applied per node", "err", err)
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	t := time.NewTicker(th.Config().ShareInterval)
	defer t.Stop()
	subj := UsageSubject(n.cfg.IDC, n.cfg.Name)
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		own := th.Share()
		if len(own) == 0 {
			continue
		}
		rep := &wirepb.UsageReport{Idc: n.cfg.IDC, Node: n.cfg.Name}
		for _, u := range own {
			rep.Backends = append(rep.Backends, &wirepb.BackendUsage{Backend: u.Backend, Usage: u.Usage, Want: u.Want})
		}
		b, err := proto.Marshal(rep)
		if err == nil {
			err = nc.Publish(subj, b)
		}
		if err != nil {
			n.log.Debug("usage report not sent", "err", err)
		}
	}
}

// decodeUsage decodes a usage report from the mesh (outside input): the
// reporting node's id (idc.node) and its usage entries. Entries with an
// invalid backend name or a usage that is not a finite non-negative number
// are dropped; a want that is not a finite non-negative number counts as
// unbounded.
func decodeUsage(b []byte) (string, []throttle.PeerUsage, error) {
	var rep wirepb.UsageReport
	if err := proto.Unmarshal(b, &rep); err != nil {
		return "", nil, fmt.Errorf("%w: usage report: %w", ErrBadRequest, err)
	}
	if err := subject.Validate("idc", rep.Idc); err != nil {
		return "", nil, err
	}
	if err := subject.Validate("node", rep.Node); err != nil {
		return "", nil, err
	}
	us := make([]throttle.PeerUsage, 0, len(rep.Backends))
	for _, u := range rep.Backends {
		if u == nil || subject.Validate("backend", u.Backend) != nil || !finite(u.Usage) || u.Usage < 0 {
			continue
		}
		want := u.Want
		if !finite(want) || want < 0 {
			want = throttle.Unbounded
		}
		us = append(us, throttle.PeerUsage{Backend: u.Backend, Usage: u.Usage, Want: want})
	}
	return rep.Idc + "." + rep.Node, us, nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// settled feeds the throttle with one settled task's reported calls;
// invalid backend names are dropped (the settlement itself goes ahead).
func (s *store) settled(q *queue, calls []*wirepb.BackendCalls, r throttle.Result) {
	var cs []throttle.Calls
	for _, c := range calls {
		if c == nil || c.Calls == 0 {
			continue
		}
		if err := subject.Validate("backend", c.Backend); err != nil {
			s.log.Debug("backend call report dropped", "queue", q.name, "err", err)
			continue
		}
		cs = append(cs, throttle.Calls{Backend: c.Backend, N: c.Calls})
	}
	s.th.Settled(q.name, cs, r)
}

func throttleStates(ss []throttle.State) []*wirepb.ThrottleState {
	out := make([]*wirepb.ThrottleState, 0, len(ss))
	for _, st := range ss {
		var since int64
		if !st.Since.IsZero() {
			since = st.Since.UnixMilli()
		}
		out = append(out, &wirepb.ThrottleState{Kind: st.Kind, Backend: st.Backend, Active: st.Active, Limit: st.Limit,
			Reason: st.Reason, SinceUnixMs: since, DeferredTotal: st.Deferred})
	}
	return out
}

func backendStats(bs []throttle.BackendState) []*wirepb.BackendStats {
	out := make([]*wirepb.BackendStats, 0, len(bs))
	for _, b := range bs {
		out = append(out, &wirepb.BackendStats{Backend: b.Backend, Budget: b.Budget, NodeUsage: b.NodeUsage,
			MeshUsage: b.MeshUsage, Share: b.Share, Nodes: uint32(b.Nodes), Constrained: b.Constrained, DeferredTotal: b.Deferred})
	}
	return out
}
