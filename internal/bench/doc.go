// Package bench runs mqmesh's benchmarks against a named peer measured in
// the same run. `mqmesh bench node` puts an mqnode, an embedded NATS
// JetStream work-queue stream and River on PostgreSQL through the same
// workload, each driven the best way its grid found, and prints them side
// by side, with ratios. `mqmesh bench latency` offers fixed rates and
// reports latency percentiles; `mqmesh bench remote` drains a node across
// a slow link; `mqmesh bench compare` flags regressions between two
// reports (scripts/bench-compare.sh runs it against docs/bench/). `mqmesh bench cpu` runs a host with the
// node's CPU throttle on and off, under the same CPU hog (below). `mqmesh
// bench backlog` measures the backlog broadcast (broadcast.go).
//
// # Running it
//
//	mqmesh bench node                          # tune, then 200,000 tasks of 256 B, both pairings
//	mqmesh bench node --tune=false --peers jetstream   # the flags' drive, mqnode and JetStream only
//	mqmesh bench node --pairs async --count 50000
//	mqmesh bench node --json > bench.json      # stable output for scripts
//	mqmesh bench node --pairs none --backlog-steps 200000,1000000,2000000
//	mqmesh bench node --pairs repl --peers jetstream --secure=false   # replication only
//
// Flags: --count tasks per run, --size payload bytes (>= 8), --batch tasks
// per enqueue request and per pull, --producers and --consumers concurrent
// goroutines, --pairs which pairings to run (async, fsync, repl, or none), --dir
// the root of the temporary data directories (removed afterwards), --json,
// --backlog-steps, --backlog-durability and --backlog-peers for the backlog
// mode, --profile-dir for profiles of the servers.
//
// # What runs
//
// Each peer's server runs in a child process, so the RSS reported is the
// peer's own: the command re-executes its own binary with the hidden
// `bench serve --peer mqnode|jetstream --durability ... --dir ...`, which
// listens on 127.0.0.1 at a random port, prints its client URL as one line
// on stdout and runs until its stdin closes or it gets SIGTERM. The parent
// connects to it over loopback TCP (never in-process, so both peers pay the
// same wire costs), runs the workload and samples the child's VmRSS from
// /proc/<pid>/status every 100 ms; VmHWM, the kernel's high-water mark, is
// the peak reported. Peers run one after the other, never at once.
//
// Three pairings (async and fsync by default; repl with --pairs):
//
//   - async: mqnode with durability async (acknowledged once written to
//     Badger's write-ahead log in the OS page cache) against JetStream's
//     default file store (acknowledged once written to the OS, no fsync per
//     message).
//   - fsync: mqnode with durability fsync (group commit: concurrent enqueues
//     share one fsync) against JetStream with the server option SyncAlways
//     (an fsync per message).
//   - repl: mqnode-r1, an mqnode with a buddy (replicas: 1, replication:
//     sync: an enqueue is acknowledged once the buddy holds it under its
//     durability, async here), against jetstream-r3, a work-queue stream
//     of Replicas: 3 on three JetStream servers clustered over loopback
//     routes at the default sync (acknowledged once 2 of 3 servers have it,
//     no fsync per message). Each runs in one child process (both nodes;
//     all three servers), so RSS and CPU are the whole replica set's.
//     Each peer is tuned on its own grid (--tune-count-repl tasks per run,
//     20,000). Beside them, with mqnode-r1's drive: mqnode-r1 with fsync on
//     both nodes, and the unreplicated mqnode at fsync, which give the cost
//     of replication (replicated / unreplicated fsync).
//     The four runs take turns --repl-rounds times (3), so that each sees
//     the machine as the others did, and each reported figure is its
//     median round's (every round is in --json under rounds). For each
//     mqnode-r1 run the report adds what the primary's stats say of its
//     buddy: records confirmed, round trips, the last round trip, and
//     enqueues acknowledged without it (0 in sync mode).
//
// The workload, the same for every peer (as driven by the baseline drive
// of --producers, --batch and --consumers, which --tune=false runs; the
// grid below varies how):
//
//   - Enqueue: --producers goroutines share one connection. mqnode producers
//     send batches of --batch tasks, one Enqueue request each, and wait for
//     its reply. JetStream producers use PublishAsync with at most
//     producers×batch PubAcks outstanding (WithPublishAsyncMaxPending), and
//     the phase ends when PublishAsyncComplete says every PubAck is in. The
//     phase ends when every task is acknowledged as durable.
//   - Drain: --consumers goroutines share a second connection, each pulling
//     up to --batch tasks at a time with a 30 s lease (JetStream: a durable
//     pull consumer, AckExplicit, AckWait 30 s, FetchNoWait while there is
//     backlog). A no-op handler: mqnode acks a batch in one Ack request;
//     JetStream acks each message with msg.Ack(), the JetStream idiom. The
//     phase ends when every task is acked and the peer reports none left.
//
// Every payload carries its task's index, so the run checks that each
// enqueued task was delivered (delivered == enqueued, duplicates counted);
// a lost task fails the command.
//
// # Reading the output
//
// The table gives, per pairing, one row per peer and one ratio row:
// enqueue/s and drain/s are tasks per second; end-to-end s is enqueue plus
// drain time (the backlog check between the phases is not counted); peak
// RSS is VmHWM of the server process; cpu s is the server's user+system CPU
// time during the workload; delivered is unique deliveries out of tasks
// enqueued. Ratios are mqnode / JetStream: above 1 means mqnode is faster
// for enqueue/s and drain/s, below 1 means mqnode is faster (end-to-end s)
// or smaller (RSS, CPU). Progress goes to stderr, the report to stdout.
//
// The backlog mode (mqnode by default; --backlog-peers mqnode,jetstream adds
// JetStream for reference) grows a backlog without draining it to each
// cumulative size in --backlog-steps and records the server's RSS (split
// into anon: heap and stacks, and file: mapped files such as Badger's
// tables, which the kernel can reclaim) and disk use after each step. It
// shows whether RSS stays flat while the backlog grows: the ready index
// pages from Badger by cursor, so the queue itself holds a bounded window,
// and what grows is the store's. With --backlog-drain N (default 200,000)
// it also times draining N tasks from the node while it holds nothing else,
// and N from the head of the full backlog at the end (their ratio: how much
// a deep backlog slows draining), and reports disk bytes per task.
//
// --profile-dir writes a CPU profile and a heap profile (taken as the server
// stops) of every server process, for `go tool pprof`.
//
// # bench cpu: the CPU throttle under a hog
//
// `mqmesh bench cpu` shows what a node's CPU throttle (mqnode/throttle)
// does when a CPU hog lands on its host: it runs the same host twice, with
// the throttle on (its defaults) and off (throttle.Config{Disabled: true}),
// and compares the enqueue latency a steady producer sees during the hog.
//
//	mqmesh bench cpu                      # about 2 minutes
//	mqmesh bench cpu --json
//	mqmesh bench cpu --rate 1000 --hog 30s --durability async
//
// Each mode is one host as deployed: a node (`bench serve --peer mqnode
// --throttle on|off`, durability --durability, with its backlog publisher,
// like `mqmesh node`) and the host's worker pool (`bench serve --peer
// worker`: a worker.Pool of --slots handlers on the node, each task burning
// a fixed amount of CPU work, calibrated once for both modes) in child
// processes on loopback. A producer in this process enqueues one task per
// call at --rate tasks/s, open loop (each call at its scheduled time in its
// own goroutine, so a slow call does not hold back the next), from start to
// end, and records each call's latency. After --warmup, --before is
// measured; then --hogs child processes (`bench serve --peer hog`, default
// one per core) spin for --hog; then --after is measured. By default the
// handlers need half the host's CPU at --rate (--handler-load), so the host
// has headroom before the hog and none during it.
//
// Where the hog runs matters as much as how busy it is. Under Linux's
// autogroup scheduling a session is one scheduling group, and groups share
// the CPU before threads inside a group do. The node and its pool share the
// bench's session, as under one supervisor or in one container. By default
// (--hog-session own) the hog starts a session of its own, like another
// service or a job from another login: it gets its group's share, and the
// node competes for the rest with its own handlers, which is what the CPU
// throttle arbitrates. With --hog-session shared the hog's processes sit in
// the node's group and compete with every thread of the node, the pool and
// the producer one for one; the throttle can then only take the handlers out
// of that contest.
//
// Per mode and phase it reports the enqueue latency percentiles, the
// dispatch rate (deliveries/s: the node's acked + nacked + expired-lease
// totals plus leased tasks, differenced), the backlog at the end, the
// host's CPU usage and who used it (node, worker, hogs, this process, and
// other: anything else on the machine, a sign of a disturbed run), and the
// node's CPU throttle from its stats (share of samples active, limit range,
// last reason). The ratio row is throttle on / off during the hog. The
// JSON also holds the samples (every --sample).
//
// # Peers at their best: drives and the tuning grid
//
// How a client drives a peer changes its figures more than the peer does,
// so `bench node` (unless --tune=false) first runs a grid of drives per
// peer, each on --tune-count tasks on one server (a queue, consumer or
// River queue of its own per run), in three stages: the enqueue styles
// (fastest enqueue/s wins), then with that the pulling style and batch
// with one consumer, then the number of consumers and the ack style
// (fastest drain/s of the two drain stages wins). The pairings then run
// each peer's best drive at --count on a fresh server. The grid:
//
//   - mqnode: batch requests (4 or 8 producers x 100 or 1,000 tasks) or
//     single-task producers into an mqnode.Enqueuer (256 or 1,000 per
//     request, 2/4/8 requests out); each consumer pulling, or the
//     consumers sharing an mqnode.Puller (pipelined pulls), at 64/256/1,000
//     per pull; 1-8 consumers; acks waited for, or sent without waiting
//     (like JetStream's msg.Ack; the phase then waits for them).
//   - jetstream: PublishAsync from 1 or 4 producers with 256-16,384
//     PubAcks outstanding (jetstream-r3: 64-16,384); Fetch, FetchNoWait or Consume (PullMaxMessages)
//     at 64/256/1,000; 1-8 consumers; msg.Ack or msg.DoubleAck.
//   - river: InsertMany or InsertManyFast (COPY) of 100 or 1,000; 100 or
//     1,000 workers with a FetchCooldown of 1 or 10 ms (River's default,
//     100 ms, caps a queue near MaxWorkers x 10 jobs/s). PostgreSQL
//     (apt package postgresql, installed by the bench when missing and
//     root) runs in a temporary cluster owned by the postgres user;
//     synchronous_commit off pairs with async, on with fsync. Without it
//     River is skipped with the reason. Its RSS and CPU are not measured.
//
// Each pairing tunes its own grid (the fsync one on --tune-count-fsync
// tasks per run, 5,000: JetStream with SyncAlways does about 4,000/s).
// The table lists each peer's drive; --json has every grid run.
//
// # bench latency: latency under load
//
//	mqmesh bench latency                     # about 2 minutes
//	mqmesh bench latency --durability fsync --rates 1000,2000
//
// Per peer (mqnode, jetstream): the maximum rate with single-task
// producers (--max-count tasks sent as fast as the client takes them while
// the consumers run), then open-loop runs of --duration at --levels
// percent of that maximum and at the absolute --rates. Task i is sent at
// start + i/rate from one goroutine whatever happened before, and carries
// that time, so latency counts from the schedule (no coordinated
// omission). mqnode: an mqnode.Enqueuer (default config) and a
// worker.Pool of --slots no-op handlers on a node with its backlog
// publisher; jetstream: PublishAsync (4,096 pending at most) and Consume
// at its defaults with msg.Ack. Per run: offered and achieved rate,
// p50/p99/p99.9 from the schedule to the handler's start and to the
// enqueue acknowledgement, from the schedule to the send call itself (the
// pacer's own lateness: timer wake-ups and a blocking producer, a floor
// that is the machine's and the client's, not the peer's), tasks handled,
// and whether it saturated (tasks unhandled within --settle-timeout or
// under 95 % of the offered rate). --warmup leaves each run's first tasks
// out; --mqnode-no-trace runs the node without its task trace.
//
// # bench remote: pulls across a slow link
//
//	mqmesh bench remote                      # 1 ms and 20 ms RTT
//
// A node (async) runs first on loopback, then in a network namespace
// (perf-bench-<pid>, veth perf-h<pid>/perf-n<pid>, 10.213.x.0/30; needs
// root and ip(8), else loopback) behind a toxiproxy latency link adding
// each of --rtts (tc netem is missing from some kernels). --count tasks
// are enqueued (not timed), then one worker drains them: a worker.Pool of
// SLOTS no-op handlers asking LOCAL_BATCH tasks per pull (--pools) and an
// mqnode.Puller keeping PULLS pulls of BATCH in flight (--pipelines). Reported:
// tasks/s per drainer and link, the round trip the worker's connection
// measured, and the ratio to the same drainer on loopback.
//
// # bench lock: tail latency on a deep backlog
//
//	mqmesh bench lock --backlog 500000 --rate 2000 --duration 20s
//
// fills one queue with --backlog tasks and --queues small ones, then for
// --duration offers single-task enqueues at --rate (open loop, at most
// --senders in flight) to the deep queue while --consumers pull
// --pull-batch and ack, with the node's backlog publisher reading every
// queue's stats. It reports p50/p99/p99.9/max of each enqueue (request →
// reply, and scheduled → reply) and each pull, and the load average at the
// start and end: anything that holds a queue's lock across disk reads
// shows in these tails. Compare two builds by running each in turn.
//
// # bench compare and continuous benchmarks
//
//	mqmesh bench compare docs/bench/node.json new.json
//	scripts/bench-compare.sh [--save] [node|latency|remote]
//
// compare reads two reports of the same bench and flags each figure worse
// by more than --threshold percent (15): throughput lower, latency, time or
// RSS higher; it exits 1 when any did. The script runs the benches and
// compares them with the last committed docs/bench/<bench>.json (--save
// writes the new ones there to commit). It is not part of CI: on a shared
// machine figures move by more than 15 %.
//
// Numbers depend on the machine: compare the peers (or modes) within one
// run, not runs across machines. The tests run small workloads and never
// assert speed.
package bench
