package backlog

import (
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// TierPolicy is how a node publishes one tier.
type TierPolicy struct {
	// Off disables the tier.
	Off bool `yaml:"off"`
	// High and Low bound the "has backlog" state with hysteresis: a queue
	// enters it when ready >= High and leaves it when ready <= Low. Both
	// crossings are published at once.
	High uint64 `yaml:"high"`
	Low  uint64 `yaml:"low"`
	// Age also puts a queue in the backlog state when its oldest ready
	// task has waited this long, however few tasks wait: nobody is taking
	// them (e.g. the host's pool died), so a handful must not be stranded
	// below High. It leaves that state once the oldest is younger than
	// Age/2 (and ready <= Low). 0 disables it.
	Age time.Duration `yaml:"age"`
	// MinInterval rate-limits changes inside the backlog state (level =
	// 1 + log2(ready/High)): at most one notice per queue per MinInterval.
	MinInterval time.Duration `yaml:"min_interval"`
	// Heartbeat is the period of a refresh of every queue in the backlog
	// state, and of the node's own heartbeat on this tier when
	// NodeHeartbeat is set, so a silent node is told apart from an idle one.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// NodeHeartbeat sends a heartbeat of the node itself every Heartbeat.
	// On by default on the host tier only: on the IDC and global tiers every
	// worker would hear every node's heartbeat, a cost that grows with the
	// mesh (the scale model measured 1,600 notices/worker/s at 10,000
	// hosts), and gossip already says which nodes are alive.
	NodeHeartbeat bool `yaml:"node_heartbeat"`
	// Wait is the tier's predicted-wait target: a queue whose ready count
	// divided by its drain rate (the planner's estimate) passes it, with at
	// least WaitMin ready, enters the backlog state at once, however far
	// below High. 0 disables it.
	Wait    time.Duration `yaml:"wait"`
	WaitMin uint64        `yaml:"wait_min"`
	// Stall also enters the backlog state at once when tasks have waited
	// this long and nobody took one meanwhile: the node's own consumers are
	// gone. Needs Wait > 0; 0 disables it.
	Stall time.Duration `yaml:"stall"`
}

// DefaultPolicies are the publisher's defaults, nearest tier first: the
// host tier a task waiting half a second or a backlog of 20 (its pool
// pulls its own node first and long-polls it when drained, so it needs no
// word of every arrival: that cost ~9 notices per worker per second in
// the default scenario's normal phase), the IDC tier a real backlog, the
// global tier only a large one, each less often. Every tier carries the
// node's heartbeat at its own rate.
var DefaultPolicies = [NumTiers]TierPolicy{
	TierHost: {High: 20, Low: 0, Age: 500 * time.Millisecond, MinInterval: 100 * time.Millisecond, Heartbeat: time.Second, NodeHeartbeat: true},
	TierIDC: {High: 20, Low: 0, Age: 500 * time.Millisecond, MinInterval: 500 * time.Millisecond, Heartbeat: 5 * time.Second,
		Wait: 250 * time.Millisecond, WaitMin: 10, Stall: 200 * time.Millisecond},
	TierGlobal: {High: 200, Low: 0, Age: 2 * time.Second, MinInterval: 2 * time.Second, Heartbeat: 15 * time.Second,
		Wait: 250 * time.Millisecond, WaitMin: 10, Stall: 200 * time.Millisecond},
}

func (p TierPolicy) validate(t Tier) error {
	if p.Off {
		return nil
	}
	if p.High == 0 || p.Low >= p.High {
		return fmt.Errorf("tier %s: need 0 <= low < high (low %d, high %d)", t, p.Low, p.High)
	}
	if p.Wait < 0 || p.Stall < 0 {
		return fmt.Errorf("tier %s: wait and stall must not be negative", t)
	}
	if p.Age < 0 || p.MinInterval <= 0 || p.Heartbeat < p.MinInterval {
		return fmt.Errorf("tier %s: need age >= 0 and 0 < min_interval <= heartbeat", t)
	}
	return nil
}

// ValidatePolicies checks every tier's policy.
func ValidatePolicies(ps [NumTiers]TierPolicy) error {
	var errs []error
	for _, t := range Tiers {
		errs = append(errs, ps[t].validate(t))
	}
	return errors.Join(errs...)
}

// Level of a ready count in the backlog state: 1 at High, +1 per doubling.
func (p *TierPolicy) Level(ready uint64) uint32 {
	if ready < p.High {
		return 1
	}
	return uint32(bits.Len64(ready / p.High))
}

// QueueState is the publisher's memory of one queue on one tier.
type QueueState struct {
	in        bool
	sentLevel uint32
	lastSent  time.Time
	// urgent: the planner predicts a wait past the tier's target (or a
	// stall); urgentAt is when it last did.
	urgent   bool
	urgentAt time.Time
	// since: when the queue last entered the backlog state.
	since time.Time
}

// Decide is the publisher's pure decision for one queue on one tier at
// time now, given its ready count and the age of its oldest ready task:
// whether to send a notice, with which level (0 = no backlog), and whether
// it is a heartbeat refresh. It updates st. The Publisher and the
// simulator's scale model both call it, so they publish alike.
func (p *TierPolicy) Decide(st *QueueState, ready uint64, oldest time.Duration, now time.Time) (send bool, level uint32, heartbeat bool) {
	wasIn := st.in
	aged := p.Age > 0 && ready > 0 && oldest >= p.Age
	young := p.Age == 0 || ready == 0 || oldest < p.Age/2
	if st.urgent {
		st.urgentAt = now
	}
	// Entered for a predicted wait: held for MinInterval after the last
	// urgent look, so helpers who just drained it keep coming back.
	held := !st.urgentAt.IsZero() && now.Sub(st.urgentAt) < p.MinInterval
	switch {
	case !st.in && (ready >= p.High || aged || st.urgent):
		st.in = true
	case st.in && ready <= p.Low && young && !held:
		st.in = false
	}
	if st.in {
		level = p.Level(ready)
	}
	since := now.Sub(st.lastSent)
	switch {
	case st.in != wasIn:
		send = true // crossing: at once
	case st.in && level != st.sentLevel && since >= p.MinInterval:
		send = true
	case st.in && since >= p.Heartbeat:
		send, heartbeat = true, true
	}
	if st.in && !wasIn {
		st.since = now
	}
	if send {
		st.sentLevel, st.lastSent = level, now
	}
	return send, level, heartbeat
}
