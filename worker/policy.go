package worker

import (
	"math/rand/v2"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
)

// Where says where a pull goes.
type Where int

const (
	// Nowhere: no free capacity, or nothing to do; wait for Decision.Wait.
	Nowhere Where = iota
	// Local: the pool's own node.
	Local
	// SameIDC: another node of the pool's IDC.
	SameIDC
	// OtherIDC: a node of another IDC.
	OtherIDC
)

func (w Where) String() string {
	return [...]string{"nowhere", "local", "same-idc", "other-idc"}[w]
}

// PolicyConfig tunes the scheduler. The zero value of a field means its
// default (see WithDefaults).
type PolicyConfig struct {
	// LocalBatch, RemoteBatch and CrossIDCBatch cap the tasks one pull asks
	// for, by where it goes; cross-IDC pulls use larger batches to amortize
	// latency. Defaults 32, 16, 64.
	LocalBatch    int `yaml:"local_batch"`
	RemoteBatch   int `yaml:"remote_batch"`
	CrossIDCBatch int `yaml:"cross_idc_batch"`
	// LongPoll is the wait of a local pull when there is nothing to help
	// with (push-like latency while idle). Default 500ms: also the longest
	// time before a pool notices remote backlog while parked.
	LongPoll time.Duration `yaml:"long_poll"`
	// Idle is how long a pool with no node of its own waits before looking
	// at its view again when nobody has backlog. Default 100ms.
	Idle time.Duration `yaml:"idle"`
	// Jitter spreads remote pulls: each waits a random 0..Jitter first, so
	// many workers reading one notice do not descend on one node at once.
	// Default 20ms.
	Jitter time.Duration `yaml:"jitter"`
	// MinHelp is the least backlog a remote node must show to be helped.
	// Default 1.
	MinHelp uint64 `yaml:"min_help"`
	// CrossIDCAlways lets the pool help other IDCs even while its own IDC
	// has backlog elsewhere. Default false: other IDCs only when no node of
	// its own IDC needs help. (Whether other IDCs are heard at all is the
	// filter's choice: the global tier.)
	CrossIDCAlways bool `yaml:"cross_idc_always"`
	// MaxAge ignores view entries older than this (stale figures). 10s.
	MaxAge time.Duration `yaml:"max_age"`
	// Reprobe: a node a pull found empty, but which has not announced the
	// end of its backlog, is tried again after this long (it re-announces
	// only on a level change or a heartbeat). Default 500ms.
	Reprobe time.Duration `yaml:"reprobe"`
	// RemoteTimeout bounds a pull from another node (beyond its wait): a
	// slow or cut link must not hold slots for long. Default 3s.
	RemoteTimeout time.Duration `yaml:"remote_timeout"`
	// MaxAvoid caps how long a node whose pull failed is avoided (the
	// backoff doubles from 1s). Default 30s.
	MaxAvoid time.Duration `yaml:"max_avoid"`
	// LocalOnly switches helping off: the pool pulls only its own node (the
	// single-host design the mesh replaces; the simulator's baseline).
	LocalOnly bool `yaml:"local_only"`
}

// WithDefaults fills zero fields.
func (c PolicyConfig) WithDefaults() PolicyConfig {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.LocalBatch, 32)
	def(&c.RemoteBatch, 16)
	def(&c.CrossIDCBatch, 64)
	if c.LongPoll <= 0 {
		c.LongPoll = 500 * time.Millisecond
	}
	if c.Idle <= 0 {
		c.Idle = 100 * time.Millisecond
	}
	if c.Jitter < 0 {
		c.Jitter = 0
	} else if c.Jitter == 0 {
		c.Jitter = 20 * time.Millisecond
	}
	if c.MinHelp == 0 {
		c.MinHelp = 1
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 10 * time.Second
	}
	if c.RemoteTimeout <= 0 {
		c.RemoteTimeout = 3 * time.Second
	}
	if c.MaxAvoid <= 0 {
		c.MaxAvoid = 30 * time.Second
	}
	if c.Reprobe <= 0 {
		c.Reprobe = 500 * time.Millisecond
	}
	return c
}

// Situation is what the scheduler knows when it decides one pull for one
// queue.
type Situation struct {
	IDC  string // the pool's IDC
	Node string // the pool's own node ("" on a worker-only host)
	// Queue being scheduled.
	Queue string
	// Free is the number of free slots reserved for this pull.
	Free int
	// LocalDrained says the last pull from the own node came back short:
	// it has no ready task now. Until then the own node comes first.
	LocalDrained bool
	// Helping says the previous pull went to another node and got tasks:
	// the pool is already helping, so no jitter is added (jitter is for the
	// first pull after a notice, when many workers read the same one).
	Helping bool
	// Entries is the backlog view (any order).
	Entries []backlog.Entry
	Now     time.Time
}

// Decision is one pull to make.
type Decision struct {
	Where    Where
	IDC      string
	Node     string
	MaxTasks int
	// Wait is the pull's long-poll wait (Local), or how long to idle
	// (Nowhere).
	Wait time.Duration
	// Delay is the jitter to sleep before a remote pull.
	Delay time.Duration
}

// Decide is the scheduling policy: a pure function of the situation, the
// config and a random source, with no I/O and no clock of its own, so the
// simulator's discrete-event model runs this very code.
//
//  1. No free slot: nowhere.
//  2. The own node first: while it has not come back short, pull it, at
//     once (no wait).
//  3. Own node drained and slots free: help a node of the same IDC with
//     backlog, chosen at random weighted by backlog (after a random
//     jitter), asking for at most RemoteBatch tasks.
//  4. No node of the same IDC needs help: help another IDC (as far as the
//     filter lets the pool hear of it), with CrossIDCBatch.
//  5. Nobody needs help: long-poll the own node (push-like latency), or
//     idle on a worker-only host.
func Decide(s Situation, cfg PolicyConfig, rng *rand.Rand) Decision {
	if s.Free <= 0 {
		return Decision{Where: Nowhere, Wait: cfg.Idle}
	}
	if s.Node != "" && (!s.LocalDrained || cfg.LocalOnly) {
		wait := time.Duration(0)
		if cfg.LocalOnly && s.LocalDrained {
			wait = cfg.LongPoll
		}
		return Decision{Where: Local, IDC: s.IDC, Node: s.Node, MaxTasks: min(s.Free, cfg.LocalBatch), Wait: wait}
	}
	if !cfg.LocalOnly {
		// Two passes over the entries, no copy: count the candidates of
		// the same IDC and of others, then find the chosen ones.
		var nSame, nOther int
		for i := range s.Entries {
			switch candidate(&s.Entries[i], s, cfg) {
			case SameIDC:
				nSame++
			case OtherIDC:
				nOther++
			}
		}
		pick := func(where Where, n, batch int) Decision {
			e := twoChoices(s, cfg, where, n, rng)
			var delay time.Duration
			if cfg.Jitter > 0 && !s.Helping {
				delay = time.Duration(rng.Int64N(int64(cfg.Jitter)))
			}
			// Ask for what the node is predicted to hold, or, from a node
			// whose arrivals are known (a pull corrected its entry), a
			// whole batch: one remote pull is in flight at a time, so a
			// pull sized to a task or two would cap the help at a few
			// tasks per round trip.
			k := min(s.Free, batch)
			if p := predicted(&e, s.Now); p > 0 && !(e.Corrected && e.EnqueueRate > 0) {
				k = min(k, int(min(p, uint64(batch))))
			}
			return Decision{Where: where, IDC: e.IDC, Node: e.Node, MaxTasks: max(k, 1), Delay: delay}
		}
		switch {
		case nSame > 0 && (nOther == 0 || !cfg.CrossIDCAlways || rng.IntN(2) == 0):
			return pick(SameIDC, nSame, cfg.RemoteBatch)
		case nOther > 0:
			return pick(OtherIDC, nOther, cfg.CrossIDCBatch)
		}
	}
	if s.Node != "" {
		return Decision{Where: Local, IDC: s.IDC, Node: s.Node, MaxTasks: min(s.Free, cfg.LocalBatch), Wait: cfg.LongPoll}
	}
	return Decision{Where: Nowhere, Wait: cfg.Idle}
}

// candidate says whether e may be helped, and where it is (Nowhere: no).
func candidate(e *backlog.Entry, s Situation, cfg PolicyConfig) Where {
	if e.Queue != s.Queue {
		return Nowhere
	}
	age := s.Now.Sub(e.Updated)
	// A node a pull found empty is probed again after Reprobe, or sooner
	// when its arrival rate predicts a task by now (an announced node
	// whose own consumers are gone: its helpers keep it drained instead of
	// waiting for it to re-announce).
	probe := e.Ready == 0 && e.Corrected && e.Level > 0 && (age >= cfg.Reprobe || e.EnqueueRate*age.Seconds() >= 1)
	if (e.Ready < cfg.MinHelp && !probe) || (age > cfg.MaxAge && !probe) {
		return Nowhere
	}
	switch {
	case e.IDC != s.IDC:
		return OtherIDC
	case e.Node != s.Node:
		return SameIDC
	}
	return Nowhere
}

// predicted is the ready count of e now: as announced, or, once a pull
// corrected it, that count plus the arrivals its rate predicts since.
func predicted(e *backlog.Entry, now time.Time) uint64 {
	if !e.Corrected || e.EnqueueRate <= 0 {
		return e.Ready
	}
	return e.Ready + uint64(e.EnqueueRate*min(now.Sub(e.Updated).Seconds(), 10))
}

// twoChoices picks two of the n candidates of where at random and returns
// the one with more (predicted) ready tasks: power-of-two choices, so
// helpers reading the same view spread over the backlogged nodes instead
// of all descending on the largest one, while still preferring large
// backlogs.
func twoChoices(s Situation, cfg PolicyConfig, where Where, n int, rng *rand.Rand) backlog.Entry {
	a, b := rng.IntN(n), rng.IntN(n)
	var ea, eb *backlog.Entry
	k := 0
	for i := range s.Entries {
		e := &s.Entries[i]
		if candidate(e, s, cfg) != where {
			continue
		}
		if k == a {
			ea = e
		}
		if k == b {
			eb = e
		}
		k++
	}
	if predicted(eb, s.Now) > predicted(ea, s.Now) {
		return *eb
	}
	return *ea
}
