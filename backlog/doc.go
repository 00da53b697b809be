// Package backlog is how workers learn, fast and precisely, where work is
// waiting: nodes broadcast their backlog levels over NATS on a hierarchy of
// subjects, and each worker subscribes, through a filter file, to the tiers
// it wants to hear.
//
// # Subjects
//
//	bl.h.<idc>.<node>.<queue>   host tier: every level change, for the host's own pool
//	bl.i.<idc>.<node>.<queue>   IDC tier: real backlog (20+ tasks, or a task waiting 0.5s+)
//	bl.g.<idc>.<node>.<queue>   global tier: large backlog (200+, or a task waiting 2s+)
//
// A filter picks tiers by subject pattern: local = bl.h.<myidc>.<mynode>.>,
// cross-machine = bl.i.<myidc>.>, cross-IDC = bl.g.>. NATS forwards a
// message over a route or a gateway only where someone subscribes, so an
// IDC whose workers do not subscribe to the global tier receives nothing
// from other IDCs. Every token is validated (ParseSubject, ParsePattern).
//
// # Publisher (node side)
//
// Publisher is a thin shell around Planner, the deterministic core (no
// goroutine, clock or I/O; the simulator's scale model drives the same
// struct; testdata/planner holds its scenario scripts): Tick(levels, now)
// returns the notices to send. Publisher looks at the node's queues every
// 20 ms and publishes on meaningful change, not on every enqueue: each tier
// has a "has backlog" state with hysteresis (enter at High ready tasks,
// when the oldest has waited Age, or at once when the predicted wait —
// ready ÷ the drain rate the planner estimates — passes the tier's Wait
// target after the nearer tier had twice its MinInterval to help, or when tasks
// wait and nobody took one for Stall: the node's own consumers are gone;
// leave at Low, not before MinInterval after the last such look), crossings are sent at once, level changes
// inside the state (level = 1 + log2(ready/High)) at most once per
// MinInterval, and a refresh of every queue in the backlog state per
// Heartbeat. A node heartbeat (subject ..._node) tells a silent node from an
// idle one on the host tier; on the wider tiers gossip does that, and
// heartbeats there would grow with the mesh (TierPolicy.NodeHeartbeat).
// A new subscriber asks for the
// current state (SyncSubject) instead of waiting for heartbeats. A notice
// carries node, IDC, queue, ready count, oldest ready age, enqueue and
// drain rates, level and a sequence number.
//
// # Summaries (one node per IDC)
//
// A worker of another IDC that heard every backlogged node's global-tier
// notice would pay a cost that grows with the mesh (232 notices per worker
// per second at 3,000 hosts in the scale model). Instead each IDC's lowest
// alive node (by gossip: SummaryElected) runs a Summarizer per tier (IDC
// and global; deterministic core like Planner, driven by the Publisher and
// by the scale model): it hears its IDC's notices of the tier
// (bl.i.<idc>.>, bl.g.<idc>.>: nothing crosses a gateway) and publishes,
// per shard, the K (8) most backlogged nodes of the shard — by level, then
// oldest task, then name — on
//
//	bls.<i|g>.<idc>.<shard>
//
// when that list changes (a node enters, leaves or changes level), at most
// every 100 ms (IDC tier) or 250 ms (global tier), and unchanged once per
// the tier's heartbeat. A worker subscribes to one shard of each IDC
// ({shard} in its filter, shards: N as on the nodes), so it hears at most
// one summary per IDC per interval whatever the mesh size, and
// View.ApplySummary makes the summary the tier's word on that IDC (nodes it
// no longer names leave the view). With shards ≥ nodes per IDC ÷ K every
// backlogged node is named to some workers, and helpers pick among the
// named ones with two random choices: they spread instead of herding on
// one "best" node. An idle mesh sends no summaries. A filter may still
// subscribe to the raw tiers (bl.i.{idc}.>, bl.g.>) instead.
//
// # View (worker side)
//
// View is the worker's table of node backlogs with their ages: a plain data
// structure with an injectable clock and no I/O, which the scheduler and
// the simulator use directly. Entries expire when stale (TierFilter
// StaleAfter), when gossip reports the node left or failed
// (mesh.Mesh.FeedView), and are corrected by pull replies (View.Correct).
// A per-tier rate cap drops refreshes and level changes, never a notice
// that a node starts or ends a backlog.
// Watcher feeds a View from NATS: one subscription per tier; callbacks only
// decode and update a map, so they never block the NATS read loop.
//
// # Filter files
//
//	tiers:
//	  local:  {subject: "bl.h.{idc}.{node}.>", min_backlog: 1}
//	  idc:    {subject: "bls.i.{idc}.{shard}", shards: 1, min_backlog: 1, max_rate: 100}
//	  global: {subject: "bls.g.*.{shard}", shards: 1, min_backlog: 1, max_rate: 20}
//
// {idc} and {node} stand for the worker's own, and {shard} for its shard
// of shards (a hash of its IDC and node), so one file serves every host.
// A Watcher started with WatcherConfig.FilterFile reloads a changed
// file (or Reload on SIGHUP); a bad file is refused with a clear message
// and the old filters stay in force. Examples: configs/filters/.
//
// Publisher and Watcher keep the lifecycle contract of package
// internal/lifecycle (Start once; Stop and Kill, the same for them,
// idempotent and safe before Start).
package backlog
