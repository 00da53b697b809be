package throttle

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Unbounded is the want of a node that is held back by its share: it would
// take more than it has.
const Unbounded = -1.0

// PeerUsage is what one node tells the mesh about one backend.
type PeerUsage struct {
	Backend string
	// Usage is the node's calls/s to the backend over the usage window.
	Usage float64
	// Want is the rate it would use if allowed: Unbounded when its share
	// held dispatch back in the last interval, else 1.25 × usage + 1.
	Want float64
}

type peer struct {
	usage, want float64
	at          int64
}

// budget is one backend's mesh-wide budget as seen by this node.
type budget struct {
	name      string
	budget    float64
	calls     *window // a = calls made by tasks this node dispatched
	heldBack  bool    // dispatch was held back by this budget since the last share
	held      bool    // constrained (held back while using its share), as of the last share
	peers     map[string]peer
	share     float64 // this node's calls/s
	meshUsage float64
	nodes     int
	bucket    bucket
	deferred  uint64
	since     int64
	reason    string
}

func newBudget(name string, b float64, usageWindow int64) *budget {
	bu := &budget{name: name, budget: b, calls: newWindowMs(usageWindow, 8), peers: map[string]peer{}, share: b, nodes: 1}
	// Until the first reports arrive the node assumes it is alone: its
	// share is the whole budget, never unlimited.
	bu.bucket.set(0, b, b*defaultBucketBurstDelay.Seconds())
	return bu
}

func newWindowMs(ms int64, buckets int) *window {
	w := max(ms/int64(buckets), 1)
	return &window{width: w, a: make([]float64, buckets), b: make([]float64, buckets), newest: -1}
}

// own is this node's usage report for the backend. It wants more than its
// share (Unbounded) only when the budget held its dispatch back while it
// used at least 80% of its share: a light node whose batch pulls briefly
// outran the bucket does not claim an equal share it would not use.
func (b *budget) own(now int64) PeerUsage {
	u := b.calls.rate(now)
	want := u*1.25 + 1
	if b.constrained(u) {
		want = Unbounded
	}
	return PeerUsage{Backend: b.name, Usage: u, Want: want}
}

func (b *budget) constrained(usage float64) bool { return b.heldBack && usage >= 0.8*b.share }

// reshare recomputes this node's share from its own usage and the peers'
// latest reports: max-min fair shares of the budget over every node heard
// from within ttl (a node wanting less than an equal share gets what it
// wants; the nodes held back split the rest equally), then whatever is left
// split equally as headroom. Every node runs the same computation on about
// the same reports (its own is fresh, the peers' up to a share interval
// old), so the shares sum to about the budget — as long as the nodes hear
// each other: across a partition each side splits the whole budget.
func (b *budget) reshare(now int64, self string, ttl int64) {
	me := b.own(now)
	type w struct {
		id   string
		want float64
	}
	ws := []w{{self, me.Want}}
	mesh := me.Usage
	for id, p := range b.peers {
		if now-p.at > ttl {
			delete(b.peers, id)
			continue
		}
		ws = append(ws, w{id, p.want})
		mesh += p.usage
	}
	for i := range ws {
		if ws[i].want < 0 {
			ws[i].want = math.Inf(1)
		}
	}
	slices.SortFunc(ws, func(x, y w) int {
		if c := cmp.Compare(x.want, y.want); c != 0 {
			return c
		}
		return strings.Compare(x.id, y.id)
	})
	left := b.budget
	alloc := map[string]float64{}
	for i, x := range ws {
		a := min(x.want, left/float64(len(ws)-i))
		alloc[x.id] = a
		left -= a
	}
	share := alloc[self] + left/float64(len(ws))
	b.share, b.meshUsage, b.nodes = share, mesh, len(ws)
	constrained := me.Want == Unbounded
	b.bucket.set(now, share, share*defaultBucketBurstDelay.Seconds())
	held := "not binding"
	if constrained {
		held = "holding dispatch back"
	}
	b.reason = fmt.Sprintf("budget %.0f calls/s over %d nodes: share %.1f/s, mesh usage %.1f/s, %s", b.budget, len(ws), share, mesh, held)
	if constrained != b.held {
		b.since = now
	}
	b.held = constrained
	b.heldBack = false
}

// holding says whether the budget held dispatch back in the last interval.
func (b *budget) holding() bool { return b.held }
