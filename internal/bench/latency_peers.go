package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/worker"
)

// latencyPeer is the client side of a peer in `bench latency`: producers
// that hand one task over per call, and consumers that run a handler per
// task.
type latencyPeer interface {
	// send hands one task over; onAck (given to connect) runs once the
	// peer acknowledged it as durable. It may block while the client's
	// bound on unacknowledged tasks is reached.
	send(ctx context.Context, payload []byte) error
	// stop stops the consumers and the producer, and closes the
	// connections.
	stop() error
}

// latencyHooks are called with a task's payload when its enqueue is
// acknowledged and when its handler starts.
type latencyHooks struct {
	onAck   func(payload []byte, err error)
	onStart func(payload []byte)
}

// connectLatency starts peerName's producer and consumers for run.
func connectLatency(ctx context.Context, peerName, url, run string, slots int, h latencyHooks, log *slog.Logger) (latencyPeer, error) {
	if peerName == peerJetStream {
		return startJetStreamLatency(ctx, url, run, h)
	}
	return startMQNodeLatency(ctx, url, run, slots, h, log)
}

// mqnodeLatency produces through an mqnode.Enqueuer (default config) and
// consumes with a worker.Pool of slots handlers on the node, as a
// deployed host does.
type mqnodeLatency struct {
	prod, cons *mqnode.Client
	enq        *mqnode.Enqueuer
	pool       *worker.Pool
	onAck      func([]byte, error)
}

func startMQNodeLatency(ctx context.Context, url, run string, slots int, h latencyHooks, log *slog.Logger) (_ *mqnodeLatency, err error) {
	p := &mqnodeLatency{onAck: h.onAck}
	defer func() {
		if err != nil {
			_ = p.stop()
		}
	}()
	if p.prod, err = mqnode.Dial(ctx, url, nats.Name("bench-producer")); err != nil {
		return nil, err
	}
	if p.cons, err = mqnode.Dial(ctx, url, nats.Name("bench-worker")); err != nil {
		return nil, err
	}
	queue := queueName + "-" + run
	if p.enq, err = p.prod.NewEnqueuer(queue, mqnode.AsyncConfig{}); err != nil {
		return nil, err
	}
	idc, node := p.cons.Node()
	if p.pool, err = worker.New(p.cons.Conn(), worker.Config{ID: "bench-latency-" + run, IDC: idc, Node: node, Slots: slots, Logger: log}); err != nil {
		return nil, err
	}
	if err = p.pool.Handle(queue, func(_ context.Context, t *worker.Task) worker.Result {
		h.onStart(t.Payload)
		return worker.Done()
	}); err != nil {
		return nil, err
	}
	if err = p.pool.Start(ctx); err != nil {
		p.pool = nil
		return nil, err
	}
	return p, nil
}

func (p *mqnodeLatency) send(ctx context.Context, payload []byte) error {
	return p.enq.EnqueueFunc(ctx, &mqnode.EnqueueItem{Payload: payload}, func(_ *mqnode.EnqueueResult, err error) {
		p.onAck(payload, err)
	})
}

func (p *mqnodeLatency) stop() error {
	var err error
	if p.enq != nil {
		p.enq.Close()
	}
	if p.pool != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = p.pool.Stop(sctx)
		cancel()
	}
	for _, c := range []*mqnode.Client{p.prod, p.cons} {
		if c != nil {
			c.Close()
		}
	}
	return err
}

// jetStreamLatency produces with PublishAsync (at most 4,096 PubAcks
// outstanding) and consumes with Consume at its defaults, acking each
// message with msg.Ack: JetStream's documented way to work a queue.
type jetStreamLatency struct {
	prodConn, consConn *nats.Conn
	js                 jetstream.JetStream
	cc                 jetstream.ConsumeContext
}

// latencyMaxPending bounds the unacknowledged publishes of bench latency's
// JetStream producer, as mqnode.DefaultAsyncMaxInFlight does mqnode's.
const latencyMaxPending = mqnode.DefaultAsyncMaxInFlight

func startJetStreamLatency(ctx context.Context, url, run string, h latencyHooks) (_ *jetStreamLatency, err error) {
	p := &jetStreamLatency{}
	defer func() {
		if err != nil {
			_ = p.stop()
		}
	}()
	if p.prodConn, err = nats.Connect(url, nats.Name("bench-producer")); err != nil {
		return nil, err
	}
	if p.consConn, err = nats.Connect(url, nats.Name("bench-consumer")); err != nil {
		return nil, err
	}
	p.js, err = jetstream.New(p.prodConn,
		jetstream.WithPublishAsyncMaxPending(latencyMaxPending),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) { h.onAck(m.Data, nil) }),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) { h.onAck(m.Data, err) }),
	)
	if err != nil {
		return nil, err
	}
	cons, err := jetstream.New(p.consConn)
	if err != nil {
		return nil, err
	}
	w := &workload{run: run}
	jp := &jetStreamPeer{prod: p.js, cons: cons, w: w, lease: 30 * time.Second}
	if err := jp.prepare(ctx); err != nil {
		return nil, err
	}
	p.cc, err = jp.consumer.Consume(func(m jetstream.Msg) {
		h.onStart(m.Data())
		_ = m.Ack()
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (p *jetStreamLatency) send(_ context.Context, payload []byte) error {
	_, err := p.js.PublishAsync(jsSubject, payload, jetstream.WithStallWait(publishStall))
	return err
}

func (p *jetStreamLatency) stop() error {
	var err error
	if p.cc != nil {
		p.cc.Stop()
	}
	if p.js != nil {
		select {
		case <-p.js.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			err = errors.New("jetstream: PubAcks outstanding after 30s")
		}
	}
	for _, c := range []*nats.Conn{p.prodConn, p.consConn} {
		if c != nil {
			if ferr := c.FlushTimeout(10 * time.Second); ferr != nil && !errors.Is(ferr, nats.ErrConnectionClosed) {
				err = errors.Join(err, fmt.Errorf("flush: %w", ferr))
			}
			c.Close()
		}
	}
	return err
}
