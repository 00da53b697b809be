// Package mqnode is one host's MQ node: a durable task store on the host's
// own disk (Badger) with queue semantics, served over an embedded NATS
// server by request/reply.
//
// # Running a node
//
//	n, err := mqnode.New(mqnode.Config{Name: "host1", IDC: "sh", DataDir: "/var/lib/mqmesh"})
//	if err != nil { ... }               // the config is checked here
//	if err := n.Start(ctx); err != nil { ... }
//	defer n.Stop(context.Background()) // graceful; safe twice, safe before Start
//
// Clients in the same process use n.Client() (an in-process NATS
// connection, no socket); others use mqnode.Dial(ctx, "nats://host:4222"),
// which asks the server it reaches which node it is.
//
// # Producing
//
// Enqueue stores a batch of tasks and answers only once they are durable
// under Config.Durability: "fsync" (default; concurrent enqueues share one
// group-committed fsync, survives power loss) or "async" (written to the
// OS; survives kill -9, not a power cut). Each task gets a UUIDv7 id. An
// EnqueueItem may carry headers (trace context), a delay or absolute
// not-before, a TTL (retention: a task not consumed in time goes to the dead
// letter queue as expired), max attempts, and a producer dedup key: a retried
// enqueue with the same key within the queue's DedupWindow returns the
// original id with Duplicate set and stores nothing.
//
// A producer that has one task at a time uses Client.NewEnqueuer instead of
// waiting a round trip per task: Enqueue hands a task over and returns a
// Future (EnqueueFunc takes a callback); the Enqueuer batches what piles up
// while its requests are out (AsyncConfig: MaxBatch per request,
// MaxRequests out, MaxInFlight tasks unsettled, no linger timer) and
// settles each task with its own result or error. Flush waits, Close
// flushes and stops (client_async.go).
//
// # Consuming
//
// Pull is a long poll: it answers with up to MaxTasks leased tasks as soon
// as any is ready, or empty when MaxWait ends (0 answers at once).
// Client.NewPuller keeps several pulls in flight for a consumer across a
// slow link and hands their deliveries out one by one (Next) or in batches
// (NextBatch), at most Pulls x MaxTasks leased and not yet taken
// (client_puller.go). Each
// delivery carries a receipt naming that one delivery. Settle it with Ack,
// in batches:
//
//   - ACK deletes the task. It may carry subtasks (streaming tasks), which
//     are enqueued in the same Badger transaction as the delete: both happen
//     or neither does.
//   - NACK retries after an explicit delay or exponential backoff with
//     jitter (QueueConfig.BackoffBase/BackoffMax); past MaxAttempts the task
//     goes to the dead letter queue with its last error.
//   - EXTEND moves the lease deadline while a handler is still running.
//   - DEAD gives up at once: straight to the dead letter queue.
//
// A receipt whose lease expired (the task was delivered again), was settled,
// or comes from an earlier run of the node is stale: ErrStaleReceipt, and
// nothing changes. Lease expiry makes the task ready again with the attempt
// counted. Delivery is at least once: handlers get the task id and attempt
// number and should be idempotent.
//
// # Replay and topics
//
// A queue with QueueConfig.KeepSettled keeps its acked and dead-lettered
// tasks for that long (settled.go); Client.Replay re-enqueues those settled
// in a span as new tasks linked to their originals, idempotently per replay
// id (replay.go). An enqueue to "topic:T" writes one task into every
// matching subscription of topic T in one transaction (topic.go); topics
// made with Client.TopicCreate propagate to every node (topicsync.go).
//
// # Guarantees and their limits
//
//   - An acknowledged enqueue survives kill -9 (both durability modes) and,
//     with fsync, power loss.
//   - Lease state is memory only: after a crash every leased task is ready
//     again, and the attempt number of a delivery in flight at the crash is
//     not counted.
//   - Order: within a queue, tasks are delivered in the order they became
//     ready (enqueue time or not-before), by a node-wide sequence among
//     equals. Retries go to the back, at their retry time.
//   - Every stored record carries a CRC32C; a record that fails it is moved
//     to the dead letter queue with the reason and its raw bytes, never
//     delivered.
//   - Retention is enforced when a task reaches the head of its queue: it is
//     never delivered after it expired, and it is moved to the dead letter
//     queue then.
//   - Numbers from the wire (delay, not-before, TTL, lease, extension, nack
//     delay, max attempts) are range-checked (MaxDelay, MaxTTL, MaxLease,
//     MaxAttemptsLimit): out of range is BAD_REQUEST naming the field; time
//     arithmetic saturates. A pull's max_tasks and max_wait are clamped.
//   - Replies fit one NATS message: a pull returns as many tasks as fit (at
//     least one; the rest stay ready, no attempt counted), a task that could
//     not fit a reply alone is refused at enqueue, DLQ lists and stats page
//     by bytes, and an unsent pull reply gives its leases back at once.
//   - Disk full (below Config.DiskReserve) is ErrDiskFull for enqueues while
//     pulls, acks and DLQ purges go on (diskspace.go says why Badger used to
//     die with SIGBUS and what closes it).
//   - Store damage is never silent and never a crash: unreadable records go
//     to the dead letter queue with the reason; records a damaged log drops
//     are found missing at start by the ledger (ledger.go) and reported (log,
//     DamageLog, stats LostTotal); a damaged table or MANIFEST makes the node
//     refuse to start (ErrCorrupted) with the repair path, Repair (mqmesh
//     node repair) salvaging what can be read into a fresh store.
//
// # Replication (opt-in, per queue)
//
// Config.Replicas: 1 (or QueueConfig.Replicas per queue; -1 switches a
// node default off for one queue) copies a queue's writes — puts, acks and
// other deletes, dead letters, DLQ changes, dedup keys — to a buddy node,
// in commit order, over NATS on mqrepl.<idc>.<buddy>.<op> (role node
// only). Config.Replication (or per queue) is sync (default: an enqueue is
// acknowledged once the buddy holds it durably; concurrent enqueues share
// one round trip and a group commit on each side) or async (acknowledged
// locally; the lag is bounded by Buddy.MaxLag, then Buddy.LagPolicy block
// or alarm). Config.Buddy sets the buddy IDC (default the node's own; the
// buddy is another host, chosen by rendezvous hashing over the alive
// peers and kept while alive), TakeoverAfter (default 30s), the sync
// PartitionPolicy (block (default, up to SyncTimeout 5s) | fail | local =
// acknowledge locally with an alarm), CopyRate of re-replication (records/s,
// default 20000) and ReconcileWait.
//
// The mesh feeds the peers (Node.SetPeers); without it, StartGroup starts
// nodes joined by NATS routes and tells each about the others, and
// SetGroupPeers re-tells them after one stops. Node.WaitReplicated waits
// for the first confirmed copy. Node.Replication (also StatsReply.replication,
// metrics mqmesh_repl_*) reports buddy, state (off, no-buddy, connecting,
// reconciling, copying, replicated, down, fenced), epoch, lag, copy
// progress, acknowledgements without the buddy, failed enqueues,
// takeovers, and the primaries the node holds copies of.
//
// When gossip has reported a primary down for TakeoverAfter, its buddy
// fences it (new epoch) and imports the copy as tasks of its own queues of
// the same names: they are the buddy's tasks from then on and stay there.
// A primary that restarts, or is fenced, serves no pull until it has asked
// its last buddy and deleted what the buddy took; ErrFenced (wire code
// FENCED) answers its writes meanwhile. replicate.go has the details.
//
// # Memory and disk
//
// The backlog lives on disk. Each queue keeps a bounded window of its next
// ready tasks in memory (Config.ReadyBuffer, ReadyBufferBytes; all windows
// together within ReadyBudget, see budget.go) and pages the
// rest in from Badger by cursor; keys sort by ready time, so the cursor never
// walks back over acked tasks' tombstones. Records of ValueThreshold bytes
// or more (most tasks) live in Badger's value log and the LSM tree holds
// only keys and pointers, so the tree — and the memory Badger spends
// building and compacting it — stays small as the backlog grows. Caches
// are sized by config (MemTableSize, BlockCacheSize, IndexCacheSize).
// Value-log GC runs every GCInterval and rewrites value-log files once
// compactions have shown them mostly garbage, so disk use stays bounded
// under churn (it lags by about one round of compactions). Badger maps its
// value-log and table files into memory; every PageOutInterval the node
// has the kernel reclaim their resident pages (pageout.go), so RSS does
// not grow with the backlog on disk.
//
// # Wire
//
// Requests are protobuf messages (package wirepb, schema wire.proto) on
// mq.<idc>.<node>.<op> with op one of enq, pull, ack, stat, dlq, info, qdel,
// replay, topic. Every
// reply carries an Error with a stable Code; the Client maps codes back to
// this package's sentinels, so errors.Is(err, mqnode.ErrStaleReceipt) works
// across the wire. Every name that becomes a subject token (IDC, node,
// queue, worker id) is validated (internal/subject): a queue called "a.>"
// is refused, never obeyed. Malformed requests get BAD_REQUEST and the node
// keeps serving; a payload over Config.MaxPayload is refused before anything
// is written.
//
// # Security and limits
//
// With Config.Security (a loaded internal/secrets set) the client port
// takes TLS and nkey users only, each role with its subject permissions;
// the node's own in-process connections (Connect, Client) authenticate as
// role node. A request the connection's role may not make fails at once
// with ErrPermissionDenied (wire code PERMISSION_DENIED): Dial and Connect
// add WatchPermissions, which turns the server's asynchronous permission
// violation into that error. Receipts are 128 random bits per delivery. A
// lease records the mesh membership of its worker (Node.WorkerMember), so
// ReleaseWorker frees only what that member took. Per client connection
// (told by its reply inbox) a node caps pulls in flight
// (MaxPullsPerClient) and requests per second (MaxRequestRate); per node it
// caps queues (MaxQueues) and evicts auto-created queues left empty and
// unused for QueueIdleEvict. Beyond a limit: UNAVAILABLE.
//
// # Operations
//
// Node.Collector is the node's Prometheus collector (gauges and counters
// read from its state at scrape time, histograms of enqueue duration,
// schedule-to-start, enqueue-to-done, lease-to-settle and group commits);
// CheckStore, CheckNATS and CheckDisk are its readiness checks. Every task's
// life on its node is kept in a bounded trace (TraceConfig: retention,
// sample, per-task cap; events in the store's keyspace x, written with the
// task writes' group commits): Node.Trace reads it, and FindTrace asks every
// node of the mesh on TraceSubject, where the owner answers. Client.Enqueue
// puts the caller's W3C trace context in the task headers
// (HeaderTraceParent) and its connection name in the request
// (EnqueueRequest.producer, kept as Task.Producer). The ops operation
// (OpSummary) tells viewers where a node's tasks ran and its latency
// histograms per queue.
//
// # Concurrency
//
// All writes go through one writer goroutine that gathers whatever
// operations are waiting into one transaction, hence one fsync (group
// commit). Lock order: store.qmu → queue.mu → leaseTable.mu →
// store.clockMu; nothing submits a write while holding queue.mu, because the
// writer takes queue.mu after each commit, and nothing reads the disk while
// holding it: a ready window is refilled by a read outside the lock and a
// swap under it (refill.go), and stats come from counters. A cursor never
// passes a key that may still commit below it: scans stop at the first
// stamp of the write group in flight (store.horizon).
package mqnode
