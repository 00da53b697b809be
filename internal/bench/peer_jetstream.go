package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the JetStream side of the workload.
const (
	jsStream   = "BENCH"
	jsSubject  = "bench.tasks"
	jsConsumer = "bench"
)

// jetStreamPeer drives a JetStream work-queue stream: producers share one
// connection, consumers another, as for mqnode.
type jetStreamPeer struct {
	prodConn, consConn *nats.Conn
	prod, cons         jetstream.JetStream
	consumer           jetstream.Consumer
	lease              time.Duration

	// Async publish bookkeeping, fed by the PubAck handlers.
	acked    atomic.Pointer[atomic.Int64]
	pubErrs  atomic.Int64
	errMu    sync.Mutex
	firstErr error
}

func dialJetStream(url string, w *workload) (*jetStreamPeer, error) {
	p := &jetStreamPeer{lease: w.lease}
	var err error
	if p.prodConn, err = nats.Connect(url, nats.Name("bench-producer")); err != nil {
		return nil, err
	}
	if p.consConn, err = nats.Connect(url, nats.Name("bench-consumer")); err != nil {
		p.prodConn.Close()
		return nil, err
	}
	p.prod, err = jetstream.New(p.prodConn,
		// The same bound on unacknowledged tasks as mqnode's producers get:
		// producers × batch.
		jetstream.WithPublishAsyncMaxPending(w.producers*w.batch),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, _ *nats.Msg, _ *jetstream.PubAck) {
			if c := p.acked.Load(); c != nil {
				c.Add(1)
			}
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			p.pubErrs.Add(1)
			p.errMu.Lock()
			if p.firstErr == nil {
				p.firstErr = err
			}
			p.errMu.Unlock()
		}),
	)
	if err == nil {
		p.cons, err = jetstream.New(p.consConn)
	}
	if err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *jetStreamPeer) close() {
	p.prodConn.Close()
	p.consConn.Close()
}

// prepare creates the work-queue stream on file storage and the durable
// pull consumer, as a production deployment has them before traffic.
func (p *jetStreamPeer) prepare(ctx context.Context) error {
	_, err := p.prod.CreateStream(ctx, jetstream.StreamConfig{
		Name:      jsStream,
		Subjects:  []string{jsSubject},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  1,
	})
	if err != nil {
		return fmt.Errorf("create stream: %w", err)
	}
	p.consumer, err = p.cons.CreateOrUpdateConsumer(ctx, jsStream, jetstream.ConsumerConfig{
		Durable:   jsConsumer,
		AckPolicy: jetstream.AckExplicitPolicy,
		AckWait:   p.lease,
		// mqnode puts no cap on leased tasks; neither does this consumer.
		MaxAckPending: -1,
	})
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	return nil
}

// publishStall is how long a PublishAsync may wait for a free slot under
// the max-pending bound before it fails (the default is 200 ms, too short
// when every write is fsynced).
const publishStall = time.Minute

// enqueue publishes every task with PublishAsync (at most producers×batch
// PubAcks outstanding) and returns once every PubAck is in.
func (p *jetStreamPeer) enqueue(ctx context.Context, w *workload, from, to uint64, progress *atomic.Int64) error {
	p.acked.Store(progress)
	defer p.acked.Store(nil)
	p.pubErrs.Store(0)
	err := produce(ctx, w, from, to, func(ctx context.Context, lo, hi uint64) error {
		for i := lo; i < hi; i++ {
			if _, err := p.prod.PublishAsync(jsSubject, w.payload(i), jetstream.WithStallWait(publishStall)); err != nil {
				return fmt.Errorf("publish task %d: %w", i, err)
			}
		}
		return nil
	})
	if err == nil {
		// Every publish is registered now, so completion means every PubAck
		// (or error) arrived.
		select {
		case <-p.prod.PublishAsyncComplete():
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
	}
	if n := p.pubErrs.Load(); n > 0 {
		p.errMu.Lock()
		first := p.firstErr
		p.errMu.Unlock()
		err = errors.Join(err, fmt.Errorf("%d publishes failed, first: %w", n, first))
	}
	return err
}

func (p *jetStreamPeer) stored(ctx context.Context) (int64, error) {
	s, err := p.prod.Stream(ctx, jsStream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return int64(info.State.Msgs), nil
}

func (p *jetStreamPeer) drainer(int) drainer { return p }

// idleFetchWait bounds a Fetch that waits for tasks when none was ready.
const idleFetchWait = time.Second

// fetch takes what is ready with FetchNoWait (a full batch while there is
// backlog); when nothing is, it waits with Fetch until ctx ends or a second
// passes. Each message is acked on its own with msg.Ack(), the JetStream
// idiom (AckAll would settle other consumers' messages too).
func (p *jetStreamPeer) fetch(ctx context.Context, n int) ([]uint64, func(context.Context) error, error) {
	b, err := p.consumer.FetchNoWait(n)
	if err != nil {
		return nil, nil, err
	}
	msgs, err := collect(b)
	if err != nil || len(msgs) > 0 {
		return p.settle(msgs, err)
	}
	wctx, cancel := context.WithTimeout(ctx, idleFetchWait)
	defer cancel()
	b, err = p.consumer.Fetch(n, jetstream.FetchContext(wctx))
	if err != nil {
		return nil, nil, err
	}
	msgs, err = collect(b)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = nil // the wait ran out: come back
	}
	return p.settle(msgs, err)
}

func collect(b jetstream.MessageBatch) ([]jetstream.Msg, error) {
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, b.Error()
}

func (p *jetStreamPeer) settle(msgs []jetstream.Msg, err error) ([]uint64, func(context.Context) error, error) {
	if err != nil {
		return nil, nil, err
	}
	idx := make([]uint64, len(msgs))
	for i, m := range msgs {
		if idx[i], err = taskIndex(m.Data()); err != nil {
			return nil, nil, err
		}
	}
	ack := func(context.Context) error {
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				return err
			}
		}
		return nil
	}
	return idx, ack, nil
}

// flush makes sure the server has read every ack sent (msg.Ack does not
// wait for a reply).
func (p *jetStreamPeer) flush() error { return p.consConn.FlushTimeout(30 * time.Second) }
