package bench

// The figures of `bench backlog`: worker notice counts and their
// differences, and the per filter config rates and latencies made of them.

import (
	"time"

	"github.com/mqmesh/mqmesh/backlog"
)

func snapshot(workers []*bcWorker) []counts {
	out := make([]counts, len(workers))
	for i, w := range workers {
		out[i] = w.counts()
	}
	return out
}

// diff is after - before, per worker.
func diff(after, before []counts) []counts {
	out := make([]counts, len(after))
	for i := range after {
		for t := range backlog.NumTiers {
			out[i].accepted[t] = after[i].accepted[t] - before[i].accepted[t]
			out[i].dropped[t] = after[i].dropped[t] - before[i].dropped[t]
		}
	}
	return out
}

// addCounts is sum + delta, per worker (sum may be nil).
func addCounts(sum, delta []counts) []counts {
	if sum == nil {
		sum = make([]counts, len(delta))
	}
	for i := range delta {
		for t := range backlog.NumTiers {
			sum[i].accepted[t] += delta[i].accepted[t]
			sum[i].dropped[t] += delta[i].dropped[t]
		}
	}
	return sum
}

// received is accepted + dropped over every tier.
func received(c counts) uint64 {
	var n uint64
	for t := range backlog.NumTiers {
		n += c.accepted[t] + c.dropped[t]
	}
	return n
}

// filterNotices computes the per filter config figures.
func filterNotices(filters []bcFilter, workers []*bcWorker, nodes []*bcNode, steady []counts, steadyS float64,
	event []counts, eventS float64, extra []float64, rounds int) []FilterNotices {
	out := make([]FilterNotices, 0, len(filters))
	for fi, f := range filters {
		fn := FilterNotices{Filter: f.name, Tiers: []string{}}
		for _, t := range backlog.Tiers {
			if _, ok := f.filters.Tiers[t.String()]; ok {
				fn.Tiers = append(fn.Tiers, t.String())
			}
		}
		var mine []int
		for i, w := range workers {
			if w.filter == fi {
				mine = append(mine, i)
			}
		}
		fn.Workers = len(mine)
		fn.HeartbeatFloorPerWorkerPerS = heartbeatFloor(workers, mine, nodes)
		if steady != nil {
			fn.Steady = rates(steady, mine, steadyS)
		}
		if event != nil {
			fn.Event = rates(event, mine, eventS)
		}
		if extra != nil && rounds > 0 && len(mine) > 0 {
			var sum float64
			for _, i := range mine {
				sum += extra[i]
			}
			fn.ExtraPerWorkerPerEvent = sum / float64(len(mine)) / float64(rounds)
		}
		out = append(out, fn)
	}
	return out
}

// heartbeatFloor is the node heartbeats per second a worker of idx hears
// (mean): per node and subscribed tier matching it, one per the tier's
// heartbeat period. A worker hears at least this much when nothing waits.
func heartbeatFloor(workers []*bcWorker, idx []int, nodes []*bcNode) float64 {
	if len(idx) == 0 {
		return 0
	}
	var sum float64
	for _, i := range idx {
		for _, n := range nodes {
			for _, t := range backlog.Tiers {
				if p := workers[i].patterns[t]; p != nil && backlog.DefaultPolicies[t].NodeHeartbeat && p.Matches(backlog.Subject(t, n.idc, n.name, backlog.HeartbeatQueue)) {
					sum += 1 / backlog.DefaultPolicies[t].Heartbeat.Seconds()
				}
			}
		}
	}
	return sum / float64(len(idx))
}

// rates are the notice rates of workers idx over seconds.
func rates(delta []counts, idx []int, seconds float64) Notices {
	r := Notices{Seconds: seconds}
	if len(idx) == 0 || seconds <= 0 {
		return r
	}
	per := func(v uint64) float64 { return float64(v) / seconds / float64(len(idx)) }
	var tiers [backlog.NumTiers]float64
	for _, i := range idx {
		d := delta[i]
		r.MaxWorkerPerS = max(r.MaxWorkerPerS, float64(received(d))/seconds)
		for t := range backlog.NumTiers {
			tiers[t] += per(d.accepted[t] + d.dropped[t])
			r.AcceptedPerWorkerPerS += per(d.accepted[t])
			r.DroppedPerWorkerPerS += per(d.dropped[t])
		}
	}
	r.ByTier = TierFigures{Local: tiers[backlog.TierHost], IDC: tiers[backlog.TierIDC], Global: tiers[backlog.TierGlobal]}
	r.PerWorkerPerS = r.AcceptedPerWorkerPerS + r.DroppedPerWorkerPerS
	return r
}

// latencies orders the samples by tier, then filter config.
func latencies(filters []bcFilter, samples map[latencyKey]*TierLatency) []TierLatency {
	out := []TierLatency{}
	for _, t := range backlog.Tiers {
		for fi := range filters {
			if l := samples[latencyKey{t, fi}]; l != nil {
				l.summarize()
				out = append(out, *l)
			}
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
