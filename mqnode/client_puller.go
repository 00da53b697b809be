package mqnode

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/internal/subject"
)

// Defaults of PullerConfig.
const (
	DefaultPullerPulls    = 2
	DefaultPullerMaxTasks = 256
	DefaultPullerMaxWait  = time.Second
)

// PullerConfig tunes a Puller. Zero fields take the defaults.
type PullerConfig struct {
	// WorkerID names the puller in its leases.
	WorkerID string
	// Lease of each task (0: the node's default). Tasks waiting in the
	// puller's buffer hold their lease, so keep Pulls × MaxTasks well
	// below what the handlers get through in one Lease.
	Lease time.Duration
	// Pulls is the most pulls out at once. Default 2: the next pull is on
	// the wire while the last one's tasks are handled.
	Pulls int
	// MaxTasks caps the tasks one pull asks for. Default 256. Over a link
	// of round trip RTT a puller moves at most Pulls × MaxTasks tasks per
	// RTT: size them to the rate wanted (rate × RTT) and more.
	MaxTasks int
	// MaxWait is each pull's long poll. Default 1s.
	MaxWait time.Duration
}

// WithDefaults fills zero fields.
func (c PullerConfig) WithDefaults() PullerConfig {
	if c.Pulls <= 0 {
		c.Pulls = DefaultPullerPulls
	}
	if c.MaxTasks <= 0 {
		c.MaxTasks = DefaultPullerMaxTasks
	}
	if c.MaxWait <= 0 {
		c.MaxWait = DefaultPullerMaxWait
	}
	return c
}

// Puller keeps up to Pulls pulls of one queue in flight and hands their
// deliveries out one at a time (Next), so a consumer on a slow link is not
// held up a round trip per batch: pipelined pulls. At most Pulls ×
// MaxTasks tasks are leased and not yet taken by Next. Close stops it and
// returns the deliveries nobody took (still leased: ack, nack or let
// their leases run out). A Puller is safe for concurrent use.
type Puller struct {
	c     *Client
	queue string
	cfg   PullerConfig

	room chan struct{} // one per task that may be leased and not taken
	out  chan *Delivery
	errs chan error // a failed pull's error (the latest kept while none reads)
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// ErrPullerClosed is Next's error after Close.
var ErrPullerClosed = fmt.Errorf("%w: puller closed", ErrUnavailable)

// NewPuller starts a puller of queue over c.
func (c *Client) NewPuller(queue string, cfg PullerConfig) (*Puller, error) {
	if err := subject.Validate("queue", queue); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidName, err)
	}
	cfg = cfg.WithDefaults()
	n := cfg.Pulls * cfg.MaxTasks
	p := &Puller{c: c, queue: queue, cfg: cfg, room: make(chan struct{}, n), out: make(chan *Delivery, n), errs: make(chan error, 1), stop: make(chan struct{})}
	for range cfg.Pulls {
		p.wg.Add(1)
		go p.loop()
	}
	return p, nil
}

// loop is one pull in flight: it reserves room for at least one task
// (then for whatever else is free, up to MaxTasks), pulls, and queues the
// deliveries.
func (p *Puller) loop() {
	defer p.wg.Done()
	for {
		select {
		case p.room <- struct{}{}:
		case <-p.stop:
			return
		}
		k := 1
	more:
		for k < p.cfg.MaxTasks {
			select {
			case p.room <- struct{}{}:
				k++
			default:
				break more
			}
		}
		// Not cancelled by Close: a pull cut short would strand leases.
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.MaxWait+DefaultRequestTimeout)
		ds, _, err := p.c.Pull(ctx, PullRequest{Queue: p.queue, MaxTasks: k, MaxWait: p.cfg.MaxWait, Lease: p.cfg.Lease, WorkerID: p.cfg.WorkerID})
		cancel()
		for range k - len(ds) {
			<-p.room
		}
		for _, d := range ds {
			p.out <- d // never blocks: out has room for every leased task
		}
		if err != nil {
			select {
			case p.errs <- err:
			default: // one unread already says the pulls fail
			}
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case <-t.C:
			case <-p.stop:
				t.Stop()
				return
			}
		}
	}
}

// Next returns the next delivery, waiting until one is pulled or ctx
// ends. A failed pull comes out as its error (the puller goes on pulling).
func (p *Puller) Next(ctx context.Context) (*Delivery, error) {
	select {
	case d := <-p.out:
		<-p.room
		return d, nil
	case err := <-p.errs:
		return nil, err
	case <-p.stop:
		return nil, ErrPullerClosed
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// NextBatch waits like Next for one delivery, then adds whatever else is
// pulled already, up to max in all.
func (p *Puller) NextBatch(ctx context.Context, max int) ([]*Delivery, error) {
	d, err := p.Next(ctx)
	if err != nil {
		return nil, err
	}
	ds := []*Delivery{d}
	for len(ds) < max {
		select {
		case d := <-p.out:
			<-p.room
			ds = append(ds, d)
		default:
			return ds, nil
		}
	}
	return ds, nil
}

// Close stops pulling, waits for the pulls in flight (each at most
// MaxWait plus the request timeout) and returns the deliveries no Next
// took: their leases are the caller's.
func (p *Puller) Close() []*Delivery {
	var left []*Delivery
	p.once.Do(func() {
		close(p.stop)
		p.wg.Wait()
		for {
			select {
			case d := <-p.out:
				left = append(left, d)
				continue
			default:
			}
			break
		}
	})
	return left
}
