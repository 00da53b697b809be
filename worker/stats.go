package worker

import "sync/atomic"

// Stats are a pool's counters. Index arrays by Where (Local, SameIDC,
// OtherIDC; index 0 is unused).
type Stats struct {
	Processed  [4]uint64 `json:"processed"`   // handled tasks by where they came from
	Pulls      [4]uint64 `json:"pulls"`       // pulls by where they went
	EmptyPulls [4]uint64 `json:"empty_pulls"` // pulls that got nothing
	Retries    uint64    `json:"retries"`
	GiveUps    uint64    `json:"give_ups"`
	Extensions uint64    `json:"lease_extensions"`
	LeaseLost  uint64    `json:"leases_lost"`
	AckErrors  uint64    `json:"ack_errors"`
	Busy       int64     `json:"busy"`
}

type counters struct {
	processed, pulls, empty          [4]atomic.Uint64
	retries, giveUps                 atomic.Uint64
	extensions, leaseLost, ackErrors atomic.Uint64
	busy                             atomic.Int64
}

func (c *counters) pull(w Where, got int) {
	c.pulls[w].Add(1)
	if got == 0 {
		c.empty[w].Add(1)
	}
}

func (c *counters) done(w Where, o outcome) {
	c.processed[w].Add(1)
	switch o {
	case outcomeRetry:
		c.retries.Add(1)
	case outcomeGiveUp:
		c.giveUps.Add(1)
	}
}

// Stats returns a snapshot of the pool's counters.
func (p *Pool) Stats() Stats {
	c := &p.stats
	var s Stats
	for i := range s.Processed {
		s.Processed[i] = c.processed[i].Load()
		s.Pulls[i] = c.pulls[i].Load()
		s.EmptyPulls[i] = c.empty[i].Load()
	}
	s.Retries, s.GiveUps = c.retries.Load(), c.giveUps.Load()
	s.Extensions, s.LeaseLost, s.AckErrors = c.extensions.Load(), c.leaseLost.Load(), c.ackErrors.Load()
	s.Busy = c.busy.Load()
	return s
}
