package bench

// The measurement loop of `bench backlog`: the steady window, the bursts,
// and the poller that times when each worker's view has a burst.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

func broadcast(ctx context.Context, o *broadcastOptions, filters []bcFilter, r *BroadcastReport) (err error) {
	root, err := os.MkdirTemp(o.dir, "mqmesh-bench-backlog-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	log, quiet := o.logger()
	o.progress("starting %d IDCs x %d nodes", o.idcs, o.nodesPerIDC)
	t0 := time.Now()
	c, err := startCluster(ctx, o, root, log)
	if err != nil {
		return err
	}
	defer func() {
		// Nodes stopping at once complain of each other's closed
		// connections: expected, and not worth showing.
		o.progress("stopping the mesh")
		quiet()
		c.stop()
	}()
	o.progress("mesh formed and every node reaches every node in %s", time.Since(t0).Round(time.Millisecond))

	var workers []*bcWorker
	defer func() {
		for _, w := range workers {
			w.close()
		}
	}()
	for fi, f := range filters {
		for _, n := range c.nodes {
			w, err := startWorker(fi, f.filters, n, log)
			if err != nil {
				return fmt.Errorf("worker on %s with %s: %w", n.name, f.name, err)
			}
			workers = append(workers, w)
		}
	}
	t0 = time.Now()
	if err := waitUntil(ctx, o.setupTimeout, "every worker to hear every node its filter covers (a heartbeat)", func() (bool, error) {
		for _, w := range workers {
			for _, n := range c.nodes {
				if _, ok := w.hears(n, backlog.HeartbeatQueue, 0); ok && w.view.NodeHeard(n.idc, n.name).IsZero() {
					return false, nil
				}
			}
		}
		return true, nil
	}); err != nil {
		return err
	}
	o.progress("%d workers (%d filter configs x %d nodes) hear every node they subscribe to, after %s",
		len(workers), len(filters), len(c.nodes), time.Since(t0).Round(time.Millisecond))

	l := startLoad(ctx, c, o.rate)
	defer func() { err = errors.Join(err, l.stop()) }()
	o.progress("steady load: %g tasks/s per node; warm-up %s, then %s measured", o.rate, o.warmup, o.steady)
	if err := sleepCtx(ctx, o.warmup); err != nil {
		return err
	}
	before := snapshot(workers)
	t0 = time.Now()
	if err := sleepCtx(ctx, o.steady); err != nil {
		return err
	}
	steadyDelta, steadyS := diff(snapshot(workers), before), time.Since(t0).Seconds()
	if hb := backlog.DefaultPolicies[backlog.TierGlobal].Heartbeat; o.steady < 2*hb {
		r.Notes = append(r.Notes, fmt.Sprintf("--steady %s is shorter than 2 global heartbeat periods (%s); the publishers started together, so their heartbeats are in phase and the steady window may hold none of a far tier's: compare with the heartbeat floor, or run --steady %s", o.steady, 2*hb, 2*hb))
	}
	if err := l.failed(); err != nil {
		return err
	}
	var eventDelta []counts
	var eventS float64
	var extra []float64 // per worker: notices beyond the steady rate, summed over rounds
	samples := map[latencyKey]*TierLatency{}
	defer func() {
		r.Filters = filterNotices(filters, workers, c.nodes, steadyDelta, steadyS, eventDelta, eventS, extra, len(r.Bursts))
		r.Latency = latencies(filters, samples)
	}()
	for round := range o.rounds {
		n := c.nodes[(round%o.idcs)*o.nodesPerIDC+round%o.nodesPerIDC]
		b, delta, err := runBurst(ctx, o, n, workers, round, samples, filters)
		if delta != nil {
			r.Bursts = append(r.Bursts, b)
			eventDelta = addCounts(eventDelta, delta)
			eventS += b.EventS
			if extra == nil {
				extra = make([]float64, len(workers))
			}
			for i := range workers {
				extra[i] += float64(received(delta[i])) - float64(received(steadyDelta[i]))/steadyS*b.EventS
			}
		}
		if err != nil {
			return err
		}
		if err := l.failed(); err != nil {
			return err
		}
	}
	return nil
}

// latencyKey groups latency samples: a tier and a filter config.
type latencyKey struct {
	tier   backlog.Tier
	filter int
}

// where names the place of a worker hearing a burst through tier t.
func where(t backlog.Tier) string {
	return [backlog.NumTiers]string{"same host", "other host, same IDC", "other IDC"}[t]
}

// runBurst runs one backlog event on node n and returns its figures and
// the workers' notice counts over the event window (nil if it did not
// get that far).
func runBurst(ctx context.Context, o *broadcastOptions, n *bcNode, workers []*bcWorker, round int,
	samples map[latencyKey]*TierLatency, filters []bcFilter) (BurstRound, []counts, error) {
	queue := fmt.Sprintf("burst-%d", round)
	b := BurstRound{Round: round, IDC: n.idc, Node: n.name, Queue: queue, Tasks: o.burst, ClearedMs: -1}
	o.progress("burst %d: %d tasks on %s/%s queue %s, held %s", round, o.burst, n.idc, n.name, queue, o.burstHold)
	p := startPoller(o.poll, workers, n, queue)
	defer p.stop()
	before := snapshot(workers)
	start := time.Now()
	var acks []ackMark
	for sent := 0; sent < o.burst; {
		k := min(o.burstBatch, o.burst-sent)
		items := make([]*mqnode.EnqueueItem, k)
		for i := range items {
			items[i] = &mqnode.EnqueueItem{Payload: []byte("burst")}
		}
		if _, err := n.client.Enqueue(ctx, queue, items...); err != nil {
			return b, nil, fmt.Errorf("burst %d: enqueue: %w", round, err)
		}
		sent += k
		acks = append(acks, ackMark{at: time.Now(), total: uint64(sent)})
	}
	b.EnqueueMs = ms(time.Since(start))
	crossing := func(threshold uint64) time.Time {
		for _, a := range acks {
			if a.total >= threshold {
				return a.at
			}
		}
		return time.Time{}
	}
	var cross [backlog.NumTiers]float64
	for _, t := range backlog.Tiers {
		if at := crossing(backlog.DefaultPolicies[t].High); !at.IsZero() {
			cross[t] = ms(at.Sub(start))
		} else {
			cross[t] = -1 // the burst is below the threshold
		}
	}
	b.CrossedMs = TierFigures{Local: cross[backlog.TierHost], IDC: cross[backlog.TierIDC], Global: cross[backlog.TierGlobal]}
	if err := sleepCtx(ctx, time.Until(start.Add(o.burstHold))); err != nil {
		return b, nil, err
	}
	t0 := time.Now()
	drained := 0
	if err := waitUntil(ctx, o.setupTimeout, "the burst to drain", func() (bool, error) {
		got, err := pullAck(ctx, n, queue, 1000, 0)
		drained += got
		return drained >= o.burst, err
	}); err != nil {
		return b, nil, fmt.Errorf("burst %d: drain (%d of %d): %w", round, drained, o.burst, err)
	}
	b.DrainMs = ms(time.Since(t0))
	cleared := waitUntil(ctx, o.settle, "the views to drop the burst", func() (bool, error) { return p.cleared(), nil })
	if ctx.Err() != nil {
		return b, nil, context.Cause(ctx)
	}
	end := time.Now()
	delta := diff(snapshot(workers), before)
	b.EventS = end.Sub(start).Seconds()
	p.stop()
	if cleared == nil {
		b.ClearedMs = ms(p.lastGone().Sub(t0))
	}
	for i, w := range workers {
		st := p.state[i]
		if !st.first.IsZero() && st.seeing {
			b.NotCleared++
		}
		t, ok := w.hears(n, queue, uint64(o.burst))
		switch {
		case !ok && !st.first.IsZero():
			b.Unexpected++
		case !ok:
		case st.first.IsZero():
			b.Missed++
			latencyOf(samples, filters, t, w.filter).Missed++
		default:
			at := crossing(max(backlog.DefaultPolicies[t].High, w.minBacklog[t]))
			l := latencyOf(samples, filters, t, w.filter)
			l.AllMs = append(l.AllMs, ms(st.first.Sub(at)))
		}
	}
	o.progress("burst %d: enqueued in %.0f ms, drained in %.0f ms, event %.2f s; views cleared %.0f ms after the drain began (%d not); %d missed, %d unexpected",
		round, b.EnqueueMs, b.DrainMs, b.EventS, b.ClearedMs, b.NotCleared, b.Missed, b.Unexpected)
	return b, delta, nil
}

func latencyOf(samples map[latencyKey]*TierLatency, filters []bcFilter, t backlog.Tier, fi int) *TierLatency {
	k := latencyKey{t, fi}
	if samples[k] == nil {
		samples[k] = &TierLatency{Tier: t.String(), Where: where(t), Filter: filters[fi].name, AllMs: []float64{}}
	}
	return samples[k]
}

// ackMark is an acknowledged enqueue of a burst: when, and the tasks
// enqueued so far.
type ackMark struct {
	at    time.Time
	total uint64
}

// poller watches, every period, whether each worker's view has a queue of
// a node, and records when it first did and when it last stopped.
type poller struct {
	done  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	mu    sync.Mutex
	state []pollState
}

type pollState struct {
	first, gone time.Time
	seeing      bool
}

func startPoller(period time.Duration, workers []*bcWorker, n *bcNode, queue string) *poller {
	p := &poller{done: make(chan struct{}), state: make([]pollState, len(workers))}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			for i, w := range workers {
				sees := w.sees(n, queue)
				now := time.Now()
				p.mu.Lock()
				st := &p.state[i]
				switch {
				case sees && st.first.IsZero():
					st.first, st.seeing = now, true
				case sees:
					st.seeing = true
				case st.seeing:
					st.seeing, st.gone = false, now
				}
				p.mu.Unlock()
			}
			select {
			case <-p.done:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// cleared reports whether no view that had the queue has it any more.
func (p *poller) cleared() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.state {
		if st.seeing {
			return false
		}
	}
	return true
}

// lastGone is when the last view dropped the queue.
func (p *poller) lastGone() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, st := range p.state {
		if st.gone.After(last) {
			last = st.gone
		}
	}
	return last
}

func (p *poller) stop() {
	p.once.Do(func() {
		close(p.done)
		p.wg.Wait()
	})
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
