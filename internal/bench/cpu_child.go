package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/worker"
)

// The children `bench cpu` starts besides its node, each through `bench
// serve` like the node: the host's worker pool (--peer worker) and the CPU
// hogs (--peer hog).

// cpuQueue is the queue the producer and the worker pool use.
const cpuQueue = "cpu"

// workerOptions are the serve flags of a worker child.
type workerOptions struct {
	url, queue string
	slots      int
	burnIters  int64 // work per task, in burn iterations
}

func (o workerOptions) args() []string {
	return []string{"--url", o.url, "--queue", o.queue, "--slots", strconv.Itoa(o.slots),
		"--burn-iters", strconv.FormatInt(o.burnIters, 10)}
}

func (o *workerOptions) flags(f *pflag.FlagSet) {
	f.StringVar(&o.url, "url", "", "worker: NATS URL of the host's node")
	f.StringVar(&o.queue, "queue", cpuQueue, "worker: queue to handle")
	f.IntVar(&o.slots, "slots", 0, "worker: handlers that run at once")
	f.Int64Var(&o.burnIters, "burn-iters", 0, "worker: CPU work per task, in burn iterations")
}

func (o workerOptions) validate() error {
	if o.url == "" || o.slots < 1 || o.burnIters < 0 {
		return errors.New("worker: need --url, --slots >= 1 and --burn-iters >= 0")
	}
	return nil
}

// startPoolChild runs a worker pool on the node at o.url, as the worker pool
// of the node's host: its handler burns o.burnIters iterations of CPU
// work per task and acks it. It returns the node's URL as its ready line.
func startPoolChild(ctx context.Context, o workerOptions, log *slog.Logger) (string, func() error, error) {
	c, err := mqnode.Dial(ctx, o.url, nats.Name("bench-worker"))
	if err != nil {
		return "", nil, err
	}
	idc, node := c.Node()
	p, err := worker.New(c.Conn(), worker.Config{ID: "bench-worker", IDC: idc, Node: node, Slots: o.slots, Logger: log})
	if err == nil {
		err = p.Handle(o.queue, func(context.Context, *worker.Task) worker.Result {
			burn(o.burnIters)
			return worker.Done()
		})
	}
	if err == nil {
		err = p.Start(ctx)
	}
	if err != nil {
		c.Close()
		return "", nil, err
	}
	return o.url, func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := p.Stop(sctx)
		c.Close()
		return err
	}, nil
}

// hogReady is the line a hog prints once it spins.
const hogReady = "hog"

// hog keeps one core busy until stdin reaches EOF, ctx ends or limit
// passes, whichever comes first.
func hog(ctx context.Context, limit time.Duration, stdin io.Reader, stdout io.Writer) error {
	var stop atomic.Bool
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		stop.Store(true)
	}()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	context.AfterFunc(ctx, func() { stop.Store(true) })
	if _, err := fmt.Fprintln(stdout, hogReady); err != nil {
		return err
	}
	for !stop.Load() {
		burn(1 << 16)
	}
	return nil
}

// burnSink keeps the compiler from dropping burn's loop.
var burnSink atomic.Uint64

// burn does iters steps of a xorshift generator: CPU work with no memory
// traffic, the same amount however busy the host is.
func burn(iters int64) {
	x := uint64(iters) | 1
	for range iters {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	burnSink.Store(x)
}

// calibrateBurn returns the burn iterations that take d on one idle core:
// the fastest of a few timed runs, so that other load on the host at the
// time shrinks the work per task as little as it can.
func calibrateBurn(d time.Duration) int64 {
	const probe = 1 << 20
	best := time.Duration(1<<63 - 1)
	for range 7 {
		t0 := time.Now()
		burn(probe)
		best = min(best, time.Since(t0))
	}
	return int64(float64(probe) * float64(d) / float64(max(best, time.Nanosecond)))
}
