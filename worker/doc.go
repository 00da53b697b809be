// Package worker is the worker pool and the SDK business code is written
// against: handlers per queue, a fixed number of concurrent slots, and the
// pull scheduler that clears the own host's node first and lends spare
// capacity to other nodes — same IDC before other IDCs.
//
// # Writing a handler
//
//	pool, err := worker.New(nc, worker.Config{IDC: "sh", Node: "host1", Slots: 32})
//	pool.Handle("push", func(ctx context.Context, t *worker.Task) worker.Result {
//	    if err := send(ctx, t.Payload); err != nil {
//	        return worker.Retry(err, 0)       // backoff, then again
//	    }
//	    return worker.Done()
//	}, worker.Timeout(10*time.Second))
//	pool.Start(ctx)
//	defer pool.Stop(context.Background())   // graceful: running tasks finish and are acked
//
// A handler gets the task (id, queue, payload, headers, attempt number, the
// node it came from and how far away that is) and returns a Result: Done,
// Retry (after the queue's backoff or a given delay), GiveUp (dead letter,
// with a reason). Done().WithSubtasks(queue, ...) returns new tasks
// (streaming tasks): the task's own node enqueues them in the same Badger
// transaction as the ack — both happen or neither does, so a pool that dies
// between the handler's return and the ack leaves no orphan subtask, and
// the parent is simply delivered again. Delivery is at least once: use the
// task id and attempt number to be idempotent.
//
// While a handler runs its lease is extended (every Config.ExtendEvery), so
// long tasks are not delivered twice; if the node says the lease is gone the
// handler's context is cancelled and its result is not acked. The handler's
// own deadline (Timeout, default Config.HandlerTimeout) cancels its context.
// A panic is caught and counts as a failure (Retry).
//
// # Scheduling
//
// The fetch loops are thin shells around Scheduler, the deterministic core
// (as etcd-io/raft's RawNode under its Node): it holds all of their state —
// whether the own node came back short, whether the pool is helping, the
// remote pull in flight, pauses, the avoid backoff of nodes whose pulls
// failed, the throttle pauses, the pool's handler health — and has no
// goroutine, clock or I/O: Next(now, queue, view, free) returns the action
// (pull where, how many, or idle), Observe(result, now) takes its outcome.
// The simulator's scale model drives the same struct in virtual time;
// testdata/scheduler holds its scenario scripts (datadriven). Each step's
// choice is Decide, a pure function of the view, the free capacity, the
// config and a random source:
//
//  1. With free slots, pull the own node (at once while it has tasks; a
//     long poll of PolicyConfig.LongPoll when nobody needs help, so an idle
//     system delivers with push-like latency).
//  2. When the own node came back short and slots are still free, help a
//     node of the same IDC that the view shows with backlog: two candidates
//     at random, the one with more (predicted) ready tasks (power-of-two
//     choices: helpers do not all descend on one node), after a random
//     jitter (only when starting to help), asking for no more than its
//     backlog or RemoteBatch — a whole batch from a node whose arrivals are
//     known, which a helper probes again as soon as its arrival rate
//     predicts a task.
//  3. Only when no node of the own IDC needs help: another IDC, as far as
//     the backlog filter lets the pool hear of it, with larger batches.
//
// A degraded pool yields: when its handlers succeed less than 70 % of the
// time and run 3× slower than their own healthy average, it takes none of
// its node's work while others keep the node's oldest task under 2 s (one
// probe task every 3 s), and helps nobody, so its node's backlog escalates
// to healthy pools.
//
// Pulls of the own node are pipelined: up to 4 are out at once, and a pool
// may lease more tasks than it has free slots (the prefetch, waiting for a
// slot), sized by the measured round trip of its pulls and its handlers'
// rate up to Config.MaxPrefetch; each pull asks for the slots plus the
// prefetch spread over the pulls, at least LocalBatch. Only free slots help
// other nodes. Acks go in batches, up to 4 requests out per node. So a pool
// across a slow link is not held to one batch per round trip.
//
// Short and empty pull replies correct the view at once. A pool on a host
// without a node (worker-only host) treats its IDC as its first tier.
// PolicyConfig.LocalOnly switches helping off (the single-host design the
// mesh replaces).
//
// # Membership and stopping
//
// With Config.Mesh set the pool is a gossip member (role worker): when it
// dies, nodes learn it from gossip and return its leased tasks to ready at
// once instead of at lease expiry, and its view drops nodes that die. Stop
// is graceful (stop pulling, let running handlers finish and ack, leave the
// mesh); Kill is a crash, as for every part of the lifecycle contract
// (internal/lifecycle): running handlers are cancelled and acked nothing,
// the pool drops out of gossip without a leave, and its tasks come back
// when the nodes see its member fail and release its leases. Its gossip
// port defaults to a free one (mesh.RandomPort): it shares a host with a
// node.
//
// Stats counts tasks processed and pulls by where they went (local, same
// IDC, other IDC), empty pulls and lease extensions; Collector exports them
// to Prometheus with histograms of handler duration and enqueue-to-start
// and enqueue-to-done latency.
//
// # Tracing
//
// A task enqueued with an OpenTelemetry span in its context carries the W3C
// traceparent header; the handler's ctx holds that span context as its
// remote parent, so spans the handler starts continue the producer's trace
// (Task.SpanContext returns it; TraceHeaders carries it into subtasks).
package worker
