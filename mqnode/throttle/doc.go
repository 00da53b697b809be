// Package throttle is an MQ node's overload protection: it decides how
// fast the node hands tasks out, so that the mesh — a buffer — protects
// itself and the backends behind the handlers instead of relying on a
// hand-set dequeue rate. Enqueues are never throttled: work that arrives
// waits on disk; only dispatch slows.
//
// # Forward throttling (what the node observes itself)
//
// Retries by success rate, per queue. The node counts each execution's
// outcome: an ack is a success, a nack or an expired lease a failure (a
// give-up is neither). When at least retry.min_samples outcomes fell in the
// last retry.window and both a moving average of outcomes (weight 0.1 each,
// so it follows the last dozen or so) and the last two seconds show
// retry.failure_ratio failing, the queue's
// retries — deliveries after a task's first — are admitted only at
// retry.probe_rate + retry.success_share × successes/s in the last
// second: about the rate
// the backend is absorbing successfully, plus a probe. A retry that is not
// admitted is deferred: rewritten on disk to be ready again later (spread at
// the admitted rate, at most retry.max_defer), without using an attempt.
// First deliveries are not held back, so a recovered backend is noticed at
// once; the limit lifts, after at least a second, when the moving average
// is back above 1 − failure_ratio/2, about 10 successes in a row at the default ratio.
//
// CPU, per node. Every cpu.interval the node samples its CPU signal. By
// default (cpu.signal starvation) that is the node's own scheduling delay
// (ProcessStarvation: the Go scheduler's p99 latency, and on Linux the
// kernel's run-queue wait per time slice of its threads): over
// cpu.max_delay the node is starved. Other services' CPU alone does not
// starve a node in its own scheduling group, so it never holds a healthy
// node back. With cpu.signal host it is the whole host's CPU usage against
// cpu.ceiling instead. When starved it cuts its dispatch rate (all queues)
// to cpu.decrease × what it dispatched in the last interval, never below
// cpu.min_rate; after two calm intervals it raises the limit by
// cpu.increase per interval, and lifts it once it no longer binds.
// Handlers on the host slow with it, so the CPU left over keeps enqueues
// (and their fsyncs) fast.
//
// # Backward throttling (what business code reports)
//
// Handlers report backend calls (worker.Task.Report("user-db", 3), or the
// worker package's wrappers); the counts travel with the acks. For each
// backend with a budget (backends.<name>.budget, calls/s, the same on every
// node) the node learns each queue's calls per task, counts the calls of the
// tasks it dispatched, and every share_interval publishes its usage and its
// want (Unbounded when its share held dispatch back) on NATS
// (mqnode.UsageSubject). Every node computes the same max-min fair split of
// the budget from those reports — nodes wanting less than an equal share
// get what they want, the nodes held back split the rest equally, leftover
// is spread as headroom — and limits the dispatch of the queues that call
// the backend to its share. The mesh-wide call rate so converges to the
// budget within a few share intervals, and no node with work is starved: each
// gets at least an equal part of what the light users leave.
//
// # What it costs and what it does not do
//
// Dispatch limits are token buckets with a quarter second of burst; a task
// goes while its bucket holds any token and may leave it in debt, so a
// costly task is not starved by cheap ones. Each deferral of a retry costs
// one write, and a retry may be deferred again each max_defer while the
// backend fails: a node holding R refused retries rewrites about
// 2R/max_defer of them a second. Budgets cover calls of tasks dispatched by
// nodes and settled (an expired lease reports nothing); calls made outside
// the mesh are not seen. Until a queue's first task is settled after a
// start, a node with budgets dispatches it at 10 tasks/s to learn its calls
// per task. A node's shares rest on reports up to peer_ttl old, so right
// after a node joins or leaves the mesh may overshoot a budget for an
// interval or two; nodes that cannot hear each other (a partition, lost
// reports) each split the whole budget, so the mesh may then exceed it.
package throttle
