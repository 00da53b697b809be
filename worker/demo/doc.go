// Package demo provides built-in worker handlers for exercising a mesh
// without writing Go: `mqmesh worker --config FILE` registers one per
// queue of its config file (see configs/worker.yaml).
//
// A handler is described by a Spec, typically decoded from YAML:
//
//	queues:
//	  push:                 # a remote call with a long tail
//	    kind: sleep
//	    latency: {median: 20ms, p99: 250ms}
//	    slowdown:           # idc-b's path to the push service is bad
//	      idc-b: {latency_factor: 10, error_rate: 0.3}
//	  email:
//	    kind: flaky
//	    latency: 5ms
//	    error_rate: 0.1     # Retry
//	    give_up_rate: 0.01  # GiveUp: to the dead letter queue
//	  group:
//	    kind: fanout        # one message, many deliveries
//	    latency: {min: 1ms, max: 3ms}
//	    fanout: {queue: push, count: 20}
//	  chat:
//	    kind: group         # one message to 1,000 members, map/reduce
//	    group: {members: 1000, servers: 10, batch_size: 50, rpc: 16, push: 32,
//	            call: {median: 2ms, p99: 20ms}, fail_rate: 0.01}
//
// Kinds:
//
//   - sleep: waits a latency, then succeeds.
//   - flaky: waits, then fails with error_rate (worker.Retry, after
//     retry_delay or the queue's backoff), gives up with give_up_rate
//     (worker.GiveUp), else succeeds.
//   - fanout: waits, then succeeds with count subtasks (count..max_count)
//     on fanout.queue, enqueued atomically with the ack. A subtask's
//     payload is the parent's payload plus "/<index>"; its dedup key is
//     the parent's id and the index, so a redelivered parent does not
//     enqueue its subtasks twice. Fanouts may not form a cycle.
//   - group: waits, then delivers the task (one group-chat message) to
//     group.members members with worker/mapreduce: members are grouped by
//     access server (member i on server i mod group.servers) into batches
//     of group.batch_size, the calls run in parallel on the handler's pool
//     "rpc" (group.rpc slots) and each waits a group.call latency, and
//     each call pushes to its members in a nested stage on pool "push"
//     (group.push slots); a member fails with group.fail_rate. The
//     results fold into Counts.Delivered and Undelivered. The pools are
//     shared by the handler's concurrent tasks (Handler.PoolStats). A
//     delivery cut short by ctx makes the task a retry.
//
// Latency is a duration (fixed) or a distribution: fixed (value), uniform
// (min..max) or lognormal (median and p99, optionally capped at max). A
// slowdown, keyed by IDC, applies when the pool runs in that IDC: every
// latency is multiplied by latency_factor and error_rate is added to the
// handler's own (for any kind).
//
// Every handler honours its ctx: a deadline or a hard stop during the
// latency makes the task a retry. Draws come from a math/rand/v2 source
// per handler, seeded by Spec.Seed or Env.Seed (SeedFor derives one per
// queue from a pool-wide seed), so a seeded run draws the same sequence;
// the source is locked, so a handler is safe for concurrent use.
//
// Spec.WithDefaults and Validate (and Queues for a whole section) check a
// spec and name the bad field as it is spelled in YAML, e.g.
// "queues.push.error_rate -0.5: must be between 0 and 1".
package demo
