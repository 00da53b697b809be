package mqnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// gateProxy is a TCP proxy between a client and a node whose node→client
// direction can be held: while held, replies do not reach the client, so
// its requests stay in flight.
type gateProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	open     *sync.Cond
	held     bool
	done     bool
	wg       sync.WaitGroup
	conns    []net.Conn
}

func startGateProxy(t *testing.T, upstream string) *gateProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gateProxy{ln: ln, upstream: upstream}
	g.open = sync.NewCond(&g.mu)
	g.wg.Add(1)
	go g.accept()
	t.Cleanup(g.close)
	return g
}

func (g *gateProxy) url() string { return "nats://" + g.ln.Addr().String() }

func (g *gateProxy) accept() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", g.upstream)
		if err != nil {
			c.Close()
			continue
		}
		g.mu.Lock()
		g.conns = append(g.conns, c, u)
		g.mu.Unlock()
		g.wg.Add(2)
		go func() { defer g.wg.Done(); _, _ = io.Copy(u, c); u.Close() }()
		go func() { defer g.wg.Done(); g.copyGated(c, u); c.Close() }()
	}
}

// copyGated copies src to dst, holding each chunk while the gate is held.
func (g *gateProxy) copyGated(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			g.mu.Lock()
			for g.held && !g.done {
				g.open.Wait()
			}
			g.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (g *gateProxy) hold(h bool) {
	g.mu.Lock()
	g.held = h
	g.mu.Unlock()
	g.open.Broadcast()
}

func (g *gateProxy) close() {
	g.mu.Lock()
	g.done = true
	conns := g.conns
	g.mu.Unlock()
	g.open.Broadcast()
	g.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	g.wg.Wait()
}

// startTCPNode starts a node with a loopback listener.
func startTCPNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	n, _ := startNode(t, cfg)
	return n
}

func dialT(t *testing.T, url string) *Client {
	t.Helper()
	c, err := Dial(ctxT(t), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// pullAll pulls every ready task of queue and returns payload by id.
func pullAll(t *testing.T, c *Client, queue string, want int) map[string]string {
	t.Helper()
	got := map[string]string{}
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < want && time.Now().Before(deadline) {
		ds, _, err := c.Pull(ctxT(t), PullRequest{Queue: queue, MaxTasks: 1000, MaxWait: 100 * time.Millisecond, WorkerID: "w"})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			got[d.GetTask().GetId()] = string(d.GetTask().GetPayload())
		}
	}
	return got
}

func TestEnqueuerEachFutureGetsItsOwnTaskAndOrderHoldsWithOneRequest(t *testing.T) {
	for _, reqs := range []int{1, 4} {
		t.Run("requests="+strconv.Itoa(reqs), func(t *testing.T) {
			_, c := startNode(t, Config{})
			e, err := c.NewEnqueuer("q", AsyncConfig{MaxBatch: 16, MaxRequests: reqs, MaxInFlight: 64})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			const n = 1000
			futures := make([]*Future, n)
			for i := range n {
				if futures[i], err = e.Enqueue(ctxT(t), &EnqueueItem{Payload: []byte(strconv.Itoa(i))}); err != nil {
					t.Fatal(err)
				}
			}
			ids := make([]string, n)
			for i, f := range futures {
				r, err := f.Wait(ctxT(t))
				if err != nil {
					t.Fatalf("task %d: %v", i, err)
				}
				ids[i] = r.GetId()
			}
			byID := pullAll(t, c, "q", n)
			if len(byID) != n {
				t.Fatalf("pulled %d tasks, want %d", len(byID), n)
			}
			for i, id := range ids {
				if byID[id] != strconv.Itoa(i) {
					t.Fatalf("future %d got id %s whose payload is %q", i, id, byID[id])
				}
			}
			if reqs == 1 {
				// One request at a time: the node stores the tasks in the
				// order they were handed over, and its ids (UUIDv7) sort
				// in storing order.
				for i := 1; i < n; i++ {
					if ids[i] <= ids[i-1] {
						t.Fatalf("task %d got id %s, not after task %d's %s", i, ids[i], i-1, ids[i-1])
					}
				}
			}
		})
	}
}

func TestEnqueuerBoundsTasksInFlight(t *testing.T) {
	n := startTCPNode(t, Config{})
	g := startGateProxy(t, n.ClientURL()[len("nats://"):])
	c := dialT(t, g.url())
	e, err := c.NewEnqueuer("q", AsyncConfig{MaxBatch: 2, MaxRequests: 2, MaxInFlight: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	g.hold(true)
	var futures []*Future
	for i := range 5 {
		f, err := e.Enqueue(ctxT(t), &EnqueueItem{Payload: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	if got := e.InFlight(); got != 5 {
		t.Fatalf("in flight %d, want 5", got)
	}
	// The sixth waits for a settled task; none settles while replies are held.
	ctx, cancel := context.WithTimeout(ctxT(t), 200*time.Millisecond)
	_, err = e.Enqueue(ctx, &EnqueueItem{Payload: []byte{5}})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("enqueue beyond max in flight: %v, want it to block until its ctx ends", err)
	}
	for i, f := range futures {
		if _, err := f.Result(); !errors.Is(err, ErrNotSettled) {
			t.Fatalf("task %d settled while replies are held: %v", i, err)
		}
	}
	g.hold(false)
	f, err := e.Enqueue(ctxT(t), &EnqueueItem{Payload: []byte{5}})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range append(futures, f) {
		if _, err := f.Wait(ctxT(t)); err != nil {
			t.Fatalf("task %d: %v", i, err)
		}
	}
	if got := len(pullAll(t, c, "q", 6)); got != 6 {
		t.Fatalf("node holds %d tasks, want 6 (the one whose hand-over timed out is not sent)", got)
	}
}

func TestEnqueuerSurfacesErrorsPerTask(t *testing.T) {
	n := startTCPNode(t, Config{MaxPayload: 100})
	g := startGateProxy(t, n.ClientURL()[len("nats://"):])
	c := dialT(t, g.url())
	e, err := c.NewEnqueuer("q", AsyncConfig{MaxBatch: 64, MaxRequests: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// Hold the replies so the first task's request stays out and the next
	// ten pile up into one batch, with a bad task in the middle.
	g.hold(true)
	first, err := e.Enqueue(ctxT(t), &EnqueueItem{Payload: []byte("first")})
	if err != nil {
		t.Fatal(err)
	}
	var results sync.Map
	var wg sync.WaitGroup
	for i := range 10 {
		p := []byte(fmt.Sprint("task-", i))
		if i == 4 {
			p = make([]byte, 200) // over the node's max payload
		}
		wg.Add(1)
		if err := e.EnqueueFunc(ctxT(t), &EnqueueItem{Payload: p}, func(r *EnqueueResult, err error) {
			results.Store(i, err)
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	g.hold(false)
	if _, err := first.Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := range 10 {
		v, _ := results.Load(i)
		err, _ := v.(error)
		if i == 4 {
			if !errors.Is(err, ErrPayloadTooLarge) {
				t.Fatalf("oversized task: %v, want ErrPayloadTooLarge", err)
			}
		} else if err != nil {
			t.Fatalf("task %d failed with its batch's bad task: %v", i, err)
		}
	}
	if got := len(pullAll(t, c, "q", 10)); got != 10 {
		t.Fatalf("node holds %d tasks, want 10", got)
	}

	// A request that fails as a whole fails each of its tasks.
	if err := n.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	f, err := e.Enqueue(ctxT(t), &EnqueueItem{Payload: []byte("late")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Wait(ctxT(t)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("enqueue on a stopped node: %v, want ErrUnavailable", err)
	}
}

func TestEnqueuerCloseFlushes(t *testing.T) {
	_, c := startNode(t, Config{})
	e, err := c.NewEnqueuer("q", AsyncConfig{MaxBatch: 32, MaxInFlight: 256})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	futures := make([]*Future, n)
	for i := range n {
		if futures[i], err = e.Enqueue(ctxT(t), &EnqueueItem{Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	e.Close()
	for i, f := range futures {
		if _, err := f.Result(); err != nil {
			t.Fatalf("task %d after Close: %v", i, err)
		}
	}
	if got := e.InFlight(); got != 0 {
		t.Fatalf("in flight after Close: %d", got)
	}
	if _, err := e.Enqueue(ctxT(t), &EnqueueItem{}); !errors.Is(err, ErrEnqueuerClosed) {
		t.Fatalf("enqueue after Close: %v, want ErrEnqueuerClosed", err)
	}
	if got := queueStats(t, c, "q").GetReady(); got != n {
		t.Fatalf("ready after Close: %d, want %d", got, n)
	}
	e.Close() // a second Close is harmless
}

func TestEnqueuerFlushWaitsForEveryTask(t *testing.T) {
	_, c := startNode(t, Config{})
	e, err := c.NewEnqueuer("q", AsyncConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var settled sync.WaitGroup
	const n = 500
	settled.Add(n)
	count := 0
	var mu sync.Mutex
	for i := range n {
		if err := e.EnqueueFunc(ctxT(t), &EnqueueItem{Payload: []byte{byte(i)}}, func(_ *EnqueueResult, err error) {
			mu.Lock()
			if err == nil {
				count++
			}
			mu.Unlock()
			settled.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := count
	mu.Unlock()
	if got != n {
		t.Fatalf("after Flush %d of %d tasks settled ok", got, n)
	}
	settled.Wait()
}

func TestEnqueuerRejectsBadConfigAndQueue(t *testing.T) {
	_, c := startNode(t, Config{})
	if _, err := c.NewEnqueuer("bad queue", AsyncConfig{}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("bad queue name: %v", err)
	}
	if _, err := c.NewEnqueuer("q", AsyncConfig{MaxBatch: 100, MaxInFlight: 10}); err == nil {
		t.Fatal("max in flight below max batch accepted")
	}
}

func TestPullerPipelinesPullsAndBoundsLeases(t *testing.T) {
	n := startTCPNode(t, Config{})
	g := startGateProxy(t, n.ClientURL()[len("nats://"):])
	c := dialT(t, g.url())
	const total = 300
	e, err := c.NewEnqueuer("q", AsyncConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range total {
		if _, err := e.Enqueue(ctxT(t), &EnqueueItem{Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	e.Close()
	p, err := c.NewPuller("q", PullerConfig{WorkerID: "w", Pulls: 3, MaxTasks: 20, MaxWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Nobody takes: the puller leases Pulls x MaxTasks tasks and stops.
	eventually(t, 10*time.Second, "60 tasks leased", func() bool { return queueStats(t, c, "q").GetLeased() == 60 })
	time.Sleep(200 * time.Millisecond) // a few more pull rounds would lease more if unbounded
	if got := queueStats(t, c, "q").GetLeased(); got != 60 {
		t.Fatalf("leased %d, want the bound 60", got)
	}
	seen := map[string]bool{}
	take := func(k int) {
		for range k {
			d, err := p.Next(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if seen[d.GetTask().GetId()] {
				t.Fatalf("task %s delivered twice", d.GetTask().GetId())
			}
			seen[d.GetTask().GetId()] = true
			if _, err := c.AckOne(ctxT(t), &AckItem{Receipt: d.GetReceipt()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	take(100)
	// Hold the replies: pulls stay out, Next still hands out what is in.
	g.hold(true)
	ctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	got := 0
	for {
		if _, err := p.Next(ctx); err != nil {
			break
		}
		got++
	}
	cancel()
	if got > 60 {
		t.Fatalf("took %d while the link was held, more than the buffer of 60", got)
	}
	g.hold(false)
	left := p.Close()
	if len(left) > 60 {
		t.Fatalf("Close returned %d deliveries, more than the bound", len(left))
	}
	if _, err := p.Next(ctxT(t)); !errors.Is(err, ErrPullerClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	s := queueStats(t, c, "q")
	if int(s.GetLeased()) < len(left) || s.GetReady()+s.GetLeased() != uint64(total-100) {
		t.Fatalf("after 100 acks: ready %d leased %d, %d left to the caller", s.GetReady(), s.GetLeased(), len(left))
	}
}

func TestPullerSurfacesPullErrors(t *testing.T) {
	n, c := startNode(t, Config{})
	p, err := c.NewPuller("q", PullerConfig{MaxWait: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := n.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Next(ctxT(t)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Next with the node stopped: %v, want ErrUnavailable", err)
	}
	if _, err := c.NewPuller("a.b", PullerConfig{}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("bad queue: %v", err)
	}
}

func TestEnqueuerCallbackMayEnqueueAgain(t *testing.T) {
	_, c := startNode(t, Config{})
	// One task in flight at most: a callback that hands over the next task
	// must not wait on its own slot.
	e, err := c.NewEnqueuer("q", AsyncConfig{MaxBatch: 1, MaxInFlight: 1})
	if err != nil {
		t.Fatal(err)
	}
	const chain = 20
	done := make(chan struct{})
	var next func(i int) func(*EnqueueResult, error)
	next = func(i int) func(*EnqueueResult, error) {
		return func(_ *EnqueueResult, err error) {
			if err != nil {
				t.Error(err)
			}
			if i == chain {
				close(done)
				return
			}
			if err := e.EnqueueFunc(context.Background(), &EnqueueItem{Payload: []byte{byte(i)}}, next(i+1)); err != nil {
				t.Error(err)
			}
		}
	}
	if err := e.EnqueueFunc(ctxT(t), &EnqueueItem{Payload: []byte{0}}, next(1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-ctxT(t).Done():
		t.Fatal("the chain of callbacks stalled")
	}
	e.Close()
	if got := queueStats(t, c, "q").GetReady(); got != chain {
		t.Fatalf("ready %d, want %d", got, chain)
	}
}
