package bench

import (
	"fmt"
	"strings"
)

// Drive is how a peer's client drives it: how producers enqueue and how
// consumers pull and ack. `bench node` tries a grid of drives per peer
// (tune.go) and compares the peers at their best.
type Drive struct {
	// Producers is the number of producer goroutines.
	Producers int `json:"producers"`
	// Enqueue is the producing style: mqnode batch (one request per batch
	// of EnqueueBatch tasks, waiting for its reply) or async (one task per
	// call to an mqnode.Enqueuer of EnqueueBatch-task requests, Requests of
	// them out, InFlight tasks unsettled at most); jetstream publish_async
	// (PublishAsync, InFlight PubAcks outstanding at most); river
	// insert_many (InsertMany of EnqueueBatch jobs per call) or
	// insert_many_fast (InsertManyFast: COPY FROM).
	Enqueue      string `json:"enqueue"`
	EnqueueBatch int    `json:"enqueue_batch"`
	InFlight     int    `json:"in_flight,omitempty"`
	Requests     int    `json:"requests,omitempty"`
	// Consumers is the number of consumer goroutines (river: the queue's
	// MaxWorkers).
	Consumers int `json:"consumers"`
	// Pull is the consuming style: mqnode pull (each consumer pulls
	// PullBatch tasks at a time) or puller (the consumers share one
	// mqnode.Puller keeping Consumers pulls of PullBatch in flight, and
	// take what it pulled with NextBatch); jetstream fetch (Fetch of PullBatch,
	// waiting for a full batch), fetch_nowait (FetchNoWait while there is
	// backlog, else Fetch) or consume (Consume's Messages iterator with
	// PullMaxMessages PullBatch); river work (River's own fetch loop, every
	// FetchCooldownMs at most).
	Pull            string `json:"pull"`
	PullBatch       int    `json:"pull_batch,omitempty"`
	FetchCooldownMs int    `json:"fetch_cooldown_ms,omitempty"`
	// Ack is how a consumed task is settled: mqnode batch (one Ack request
	// per pull, waited for) or batch_async (the same request, not waited
	// for: the consumer goes on pulling, like JetStream's msg.Ack); jetstream ack (msg.Ack: fire and forget) or double_ack
	// (msg.DoubleAck: waits for the server's confirmation); river auto (the
	// handler's return, completed by River in batches).
	Ack string `json:"ack"`
}

// Drive styles (see Drive).
const (
	enqueueBatch     = "batch"
	enqueueAsync     = "async"
	enqueuePubAsync  = "publish_async"
	enqueueRiverMany = "insert_many"
	enqueueRiverFast = "insert_many_fast"

	pullMQNode      = "pull"
	pullPuller      = "puller"
	pullFetch       = "fetch"
	pullFetchNoWait = "fetch_nowait"
	pullConsume     = "consume"
	pullRiverWork   = "work"

	ackBatch  = "batch"
	ackAsyncB = "batch_async"
	ackAsync  = "ack"
	ackDouble = "double_ack"
	ackRiver  = "auto"
)

// String is a one-line label of d.
func (d Drive) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s p%d b%d", d.Enqueue, d.Producers, d.EnqueueBatch)
	if d.InFlight > 0 {
		fmt.Fprintf(&b, " inflight%d", d.InFlight)
	}
	if d.Requests > 0 {
		fmt.Fprintf(&b, " req%d", d.Requests)
	}
	fmt.Fprintf(&b, " / %s c%d", d.Pull, d.Consumers)
	if d.PullBatch > 0 {
		fmt.Fprintf(&b, " b%d", d.PullBatch)
	}
	if d.FetchCooldownMs > 0 {
		fmt.Fprintf(&b, " cooldown%dms", d.FetchCooldownMs)
	}
	fmt.Fprintf(&b, " %s", d.Ack)
	return b.String()
}

// baseline is the drive the flags describe (--producers, --batch,
// --consumers), the one `bench node --tune=false` runs.
func baseline(peerName string, o *nodeOptions) Drive {
	switch family(peerName) {
	case peerJetStream:
		return Drive{Producers: o.producers, Enqueue: enqueuePubAsync, EnqueueBatch: o.batch, InFlight: o.producers * o.batch,
			Consumers: o.consumers, Pull: pullFetchNoWait, PullBatch: o.batch, Ack: ackAsync}
	case peerRiver:
		// River's default FetchCooldown is 100 ms, which caps a queue at
		// about MaxWorkers x 10 jobs/s; the baseline starts at 10 ms.
		return Drive{Producers: o.producers, Enqueue: enqueueRiverMany, EnqueueBatch: o.batch,
			Consumers: 1000, Pull: pullRiverWork, FetchCooldownMs: 10, Ack: ackRiver}
	}
	return Drive{Producers: o.producers, Enqueue: enqueueBatch, EnqueueBatch: o.batch,
		Consumers: o.consumers, Pull: pullMQNode, PullBatch: o.batch, Ack: ackBatch}
}

// enqueueGrid returns the enqueue styles tried for peerName, each with
// base's drain side.
func enqueueGrid(peerName string, base Drive) []Drive {
	var ds []Drive
	add := func(f func(d *Drive)) {
		d := base
		f(&d)
		ds = append(ds, d)
	}
	switch family(peerName) {
	case peerJetStream:
		windows := []int{256, 1024, 4096, 16384}
		if peerName == peerJetStreamR3 {
			// Each publish waits for a quorum round trip: narrower windows
			// did best in R3's first grids.
			windows = append([]int{64, 128}, windows...)
		}
		for _, p := range []int{1, 4} {
			for _, inflight := range windows {
				add(func(d *Drive) { d.Producers, d.InFlight, d.EnqueueBatch = p, inflight, 100 })
			}
		}
	case peerRiver:
		for _, mode := range []string{enqueueRiverMany, enqueueRiverFast} {
			for _, b := range []int{100, 1000} {
				add(func(d *Drive) { d.Producers, d.Enqueue, d.EnqueueBatch = 4, mode, b })
			}
		}
	default:
		for _, p := range []int{4, 8} {
			for _, b := range []int{100, 1000} {
				add(func(d *Drive) {
					d.Producers, d.Enqueue, d.EnqueueBatch, d.InFlight, d.Requests = p, enqueueBatch, b, 0, 0
				})
			}
		}
		// One task per call from 8 goroutines, pipelined by the client.
		for _, b := range []int{256, 1000} {
			for _, r := range []int{2, 4, 8} {
				add(func(d *Drive) {
					d.Producers, d.Enqueue, d.EnqueueBatch, d.Requests, d.InFlight = 8, enqueueAsync, b, r, 2*r*b
				})
			}
		}
	}
	return ds
}

// drainGrid returns the consuming styles tried for peerName in two
// stages: first the style and batch with one consumer (river: the worker
// count and fetch cooldown), then, from the best of those (best), the
// number of consumers and the ack style.
func drainGrid(peerName string, stage int, best Drive) []Drive {
	peerName = family(peerName)
	var ds []Drive
	add := func(f func(d *Drive)) {
		d := best
		f(&d)
		ds = append(ds, d)
	}
	switch {
	case peerName == peerRiver && stage == 1:
		for _, w := range []int{100, 1000} {
			for _, cd := range []int{1, 10} {
				add(func(d *Drive) { d.Consumers, d.FetchCooldownMs = w, cd })
			}
		}
	case peerName == peerRiver:
		return nil
	case peerName == peerJetStream && stage == 1:
		for _, pull := range []string{pullFetch, pullFetchNoWait, pullConsume} {
			for _, b := range []int{64, 256, 1000} {
				add(func(d *Drive) { d.Pull, d.PullBatch, d.Consumers, d.Ack = pull, b, 1, ackAsync })
			}
		}
	case peerName == peerJetStream:
		for _, c := range []int{1, 2, 4, 8} {
			for _, ack := range []string{ackAsync, ackDouble} {
				add(func(d *Drive) { d.Consumers, d.Ack = c, ack })
			}
		}
	case stage == 1:
		for _, pull := range []string{pullMQNode, pullPuller} {
			for _, b := range []int{64, 256, 1000} {
				add(func(d *Drive) { d.Pull, d.PullBatch, d.Consumers, d.Ack = pull, b, 1, ackBatch })
			}
		}
	default:
		for _, c := range []int{1, 2, 4, 8} {
			for _, ack := range []string{ackBatch, ackAsyncB} {
				add(func(d *Drive) { d.Consumers, d.Ack = c, ack })
			}
		}
	}
	return ds
}
