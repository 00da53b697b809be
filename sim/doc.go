// Package sim is the mesh simulator behind `mqmesh sim`: it builds a whole
// mesh in one process on loopback from the real packages (embedded NATS
// servers with routes and gateways, Badger stores, memberlist, backlog
// publishers and views, worker pools), plays a Scenario's load and fault
// timeline on it, and reports what happened per phase. RunModel is the
// other half: a discrete-event scale model in virtual time.
//
// # Modes
//
// A scenario runs in each of its modes, one after the other, and the
// report puts them side by side: mesh (as configured), baseline (every
// pool pulls only its own node: the single-host design the mesh replaces),
// unthrottled (the mesh with every node's overload protection off) and
// replicated (the mesh with every node's tasks copied to a buddy, replicas:
// 1 sync; lose-host shows what that saves).
//
// # Faults
//
// The timeline (Event) degrades an IDC's handlers, kills pools or nodes,
// loses hosts with their disks (lose-host), removes hosts, cuts or slows an IDC's gateway links, makes the handlers'
// backend refuse every call (backend-fail, backend-recover) and burns CPU
// in the process (cpu-hog, cpu-calm), or plays a bad deploy whose handlers
// ack without working and its repair by replay (bad-deploy, replay; see
// replay.go). The end of the load undoes every fault, then the run waits
// for the backlog to drain.
//
// # Overload
//
// The scenario's throttle section (Throttle) configures every node's
// overload protection (package mqnode/throttle): the retry gate, the CPU
// throttle (off in the simulator unless enabled, since every simulated
// host shares this machine's CPU) and mesh-wide backend budgets. Handlers
// call a named backend a number of times per task (Handler.Backend) and
// report the calls as real handlers do (worker.Task.Report), and may burn
// CPU per task (Handler.CPU).
//
// # Report
//
// The phase table gives throughput, enqueue → done latency, backlog and
// where tasks ran; the work table gives executions, retries (deliveries
// with Attempt > 1), completions and backend calls per second, retries the
// retry gates deferred, the producers' enqueue latency, the least progress
// of a node, and the CPU usage the CPU throttle reads with its limit. Each
// backend outage gets the retries/s while it lasted against the throughput
// before it and the time to recover (Outage); a budgeted backend gets the
// time from which the mesh-wide call rate held within ±10% of the budget
// (BudgetReport). Report.WriteTable prints both tables, WriteCSV the time
// series, WriteHTML a self-contained page with the charts.
//
// The scenario files of configs/sim/ are the examples: default.yaml (an
// IDC failure), node-crash.yaml, partition.yaml, and the overload ones,
// retry-storm.yaml, backend-budget.yaml and cpu-hog.yaml, bad-deploy.yaml
// (a bad deploy repaired by replay), and lose-host.yaml (a host lost with
// its disk, without and with replication).
package sim
