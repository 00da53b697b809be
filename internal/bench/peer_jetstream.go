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

	// Stream creation: tries and the bound of each (prepare).
	jsCreateTries   = 6
	jsCreateTimeout = 10 * time.Second
)

// jetStreamPeer drives a JetStream work-queue stream: producers share one
// connection, consumers another, as for mqnode.
type jetStreamPeer struct {
	prodConn, consConn *nats.Conn
	prod, cons         jetstream.JetStream
	consumer           jetstream.Consumer
	lease              time.Duration
	w                  *workload
	replicas           int // of the stream (3 for jetstream-r3)

	// Async publish bookkeeping, fed by the PubAck handlers.
	acked    atomic.Pointer[atomic.Int64]
	pubErrs  atomic.Int64
	errMu    sync.Mutex
	firstErr error
}

// dialJetStream connects to the server(s) at url (comma separated for a
// cluster); the stream has replicas copies.
func dialJetStream(url string, w *workload, replicas int) (*jetStreamPeer, error) {
	p := &jetStreamPeer{lease: w.lease, w: w, replicas: replicas}
	var err error
	if p.prodConn, err = nats.Connect(url, nats.Name("bench-producer")); err != nil {
		return nil, err
	}
	if p.consConn, err = nats.Connect(url, nats.Name("bench-consumer")); err != nil {
		p.prodConn.Close()
		return nil, err
	}
	p.prod, err = jetstream.New(p.prodConn,
		// The drive's bound on unacknowledged publishes.
		jetstream.WithPublishAsyncMaxPending(max(w.drive.InFlight, 1)),
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

// prepare creates the work-queue stream on file storage, with the peer's
// replicas (once per server)
// and this run's durable pull consumer, as a production deployment has
// them before traffic. A work-queue stream allows one consumer per
// subject, so consumers of earlier runs are deleted first.
func (p *jetStreamPeer) prepare(ctx context.Context) error {
	cfg := jetstream.StreamConfig{
		Name:      jsStream,
		Subjects:  []string{jsSubject},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  p.replicas,
	}
	// A JetStream API request can go unanswered while a new cluster's
	// meta group settles (CI: one create of an R3 stream waited until the
	// test's deadline); the documented remedy is to ask again. Each try
	// is bounded, the tries too.
	var err error
	for try := 1; try <= jsCreateTries; try++ {
		tctx, cancel := context.WithTimeout(ctx, jsCreateTimeout)
		_, err = p.prod.CreateOrUpdateStream(tctx, cfg)
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("create stream (%d tries of %s): %w", jsCreateTries, jsCreateTimeout, err)
	}
	s, err := p.cons.Stream(ctx, jsStream)
	if err != nil {
		return err
	}
	names := s.ConsumerNames(ctx)
	for name := range names.Name() {
		if err := s.DeleteConsumer(ctx, name); err != nil {
			return fmt.Errorf("delete consumer %s of an earlier run: %w", name, err)
		}
	}
	if err := names.Err(); err != nil {
		return err
	}
	p.consumer, err = p.cons.CreateOrUpdateConsumer(ctx, jsStream, jetstream.ConsumerConfig{
		Durable:   jsConsumer + p.w.run,
		AckPolicy: jetstream.AckExplicitPolicy,
		AckWait:   p.lease,
		// mqnode puts no cap on leased tasks; neither does this consumer.
		MaxAckPending: -1,
	})
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	if p.replicas > 1 {
		return waitReplicated(ctx, s, p.consumer)
	}
	return nil
}

// waitReplicated waits until a replicated stream and its consumer have a
// leader and every replica is current, as an operator waits before
// sending traffic: publishes right after creation can fail with "no
// response from stream" while the group elects its leader.
func waitReplicated(ctx context.Context, s jetstream.Stream, c jetstream.Consumer) error {
	ready := func(ci *jetstream.ClusterInfo) bool {
		if ci == nil || ci.Leader == "" {
			return false
		}
		for _, r := range ci.Replicas {
			if !r.Current || r.Offline {
				return false
			}
		}
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		si, err := s.Info(ctx)
		if err == nil && ready(si.Cluster) {
			ci, err := c.Info(ctx)
			if err == nil && ready(ci.Cluster) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream %s and its consumer not replicated and led within 30s: %w", jsStream, ctx.Err())
		case <-t.C:
		}
	}
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

// drainer returns the consumer goroutine's handle: a Fetch or FetchNoWait
// stream of its own, or a Messages iterator of its own for Consume.
func (p *jetStreamPeer) drainer(int) drainer {
	if p.w.drive.Pull == pullConsume {
		return &jsConsumeDrainer{p: p}
	}
	return &jsFetchDrainer{p: p}
}

// idleFetchWait bounds a Fetch that waits for tasks when none was ready.
const idleFetchWait = time.Second

// jsFetchDrainer works the messages of one pull request as they arrive,
// as a `for msg := range batch.Messages()` loop does: each fetch call
// returns what has arrived of the current batch (at least one message),
// and the next call goes on with the same batch until it is complete.
// fetch_nowait asks with FetchNoWait (what is ready now) and falls back to
// Fetch when nothing was; fetch always asks with Fetch, which waits up to
// a second for a full batch. Each message is acked on its own (msg.Ack, or
// msg.DoubleAck with ack double_ack); AckAll would settle other consumers'
// messages too.
type jsFetchDrainer struct {
	p      *jetStreamPeer
	cur    jetstream.MessageBatch
	cancel context.CancelFunc
	nowait bool // cur came from FetchNoWait
}

func (d *jsFetchDrainer) fetch(ctx context.Context, n int) ([]uint64, func(context.Context) error, error) {
	if d.cur == nil {
		var err error
		if d.p.w.drive.Pull == pullFetchNoWait {
			d.cur, err = d.p.consumer.FetchNoWait(n)
			d.nowait = true
		} else {
			err = d.fetchWait(ctx, n)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	ch := d.cur.Messages()
	var msgs []jetstream.Msg
	m, ok := <-ch
	if ok {
		msgs = append(msgs, m)
	more:
		for len(msgs) < n {
			select {
			case m, ok = <-ch:
				if !ok {
					break more
				}
				msgs = append(msgs, m)
			default:
				break more
			}
		}
	}
	if !ok { // the batch is complete
		err := d.cur.Error()
		d.done()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = nil // the wait ran out: come back
		}
		if err != nil {
			return nil, nil, err
		}
		if len(msgs) == 0 && d.nowait && ctx.Err() == nil {
			// Nothing was ready: wait for the next with Fetch.
			if err := d.fetchWait(ctx, n); err != nil {
				return nil, nil, err
			}
		}
	}
	return d.p.settle(msgs, nil)
}

// fetchWait starts a Fetch of up to n messages that waits up to a second.
func (d *jsFetchDrainer) fetchWait(ctx context.Context, n int) error {
	wctx, cancel := context.WithTimeout(ctx, idleFetchWait)
	b, err := d.p.consumer.Fetch(n, jetstream.FetchContext(wctx))
	if err != nil {
		cancel()
		return err
	}
	d.cur, d.cancel, d.nowait = b, cancel, false
	return nil
}

func (d *jsFetchDrainer) done() {
	if d.cancel != nil {
		d.cancel()
	}
	d.cur, d.cancel = nil, nil
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
	return idx, p.acker(msgs), nil
}

// acker returns the func that acks msgs as the drive says.
func (p *jetStreamPeer) acker(msgs []jetstream.Msg) func(context.Context) error {
	double := p.w.drive.Ack == ackDouble
	return func(ctx context.Context) error {
		for _, m := range msgs {
			var err error
			if double {
				err = m.DoubleAck(ctx)
			} else {
				err = m.Ack()
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
}

// jsConsumeDrainer drains with Consume's iterator form (Messages), which
// keeps up to PullMaxMessages messages buffered ahead of the consumer.
type jsConsumeDrainer struct {
	p    *jetStreamPeer
	iter jetstream.MessagesContext
}

func (d *jsConsumeDrainer) fetch(ctx context.Context, n int) ([]uint64, func(context.Context) error, error) {
	if d.iter == nil {
		it, err := d.p.consumer.Messages(jetstream.PullMaxMessages(n))
		if err != nil {
			return nil, nil, err
		}
		d.iter = it
		context.AfterFunc(ctx, it.Stop)
	}
	wctx, cancel := context.WithTimeout(ctx, idleFetchWait)
	defer cancel()
	m, err := d.iter.Next(jetstream.NextContext(wctx))
	if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return nil, nil, nil // nothing came within the wait: come back
	}
	if err != nil {
		return nil, nil, err
	}
	return d.p.settle([]jetstream.Msg{m}, nil)
}

// flush makes sure the server has read every ack sent (msg.Ack does not
// wait for a reply).
func (p *jetStreamPeer) flush() error { return p.consConn.FlushTimeout(30 * time.Second) }
