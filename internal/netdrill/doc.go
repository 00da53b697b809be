// Package netdrill is the multi-host drill of mqmesh: real `mqmesh node`
// and `mqmesh worker` processes, one pair per host, each host in its own
// Linux network namespace (veth pairs on a bridge), 2 IDCs × 2 hosts, and
// real faults between them. It is a test (drill_test.go); this package has
// no API.
//
// # What it does
//
//	go test -v -run Drill ./internal/netdrill     # as root; ~3-5 minutes
//
// builds the binary, creates the namespaces dep-a1, dep-a2 (idc-a), dep-b1,
// dep-b2 (idc-b) on the bridge dep-br (10.213.77.0/24; the test process
// reaches every host from the root namespace through the bridge), starts a
// node and a worker pool on each (the first node with no seed, the others
// naming one), and a producer that enqueues on every node every second
// (`mqmesh enqueue --ids`: the ids printed are the acknowledged enqueues).
// Worker pools record every task they finish before acking it
// (`mqmesh worker --completions`). Then, step by step:
//
//   - kill -9 of host a1 (node and pool), restarted 6 s later exactly as
//     first started (no seed: it rejoins through the members it remembers);
//   - SIGSTOP of host b2 for 10 s, then SIGCONT (a frozen host);
//   - an IDC partition: every packet between idc-a and idc-b dropped
//     (iptables) for 15 s, then healed;
//   - a slow link on a2: 5 % packet loss (iptables statistic) and, where
//     the kernel has it, 80 ms ± 20 ms of netem delay, else a 1 Mbit/s
//     token bucket (tbf), for 15 s;
//   - a full disk: b1's data dir is a 96 MiB tmpfs, filled up for 8 s
//     while the producer goes on, then freed (the node restarted as first
//     started if it died);
//   - buddy replication (repl_test.go; every node runs with replicas: 1,
//     sync, takeover_after 10 s, partition policy block, sync_timeout 2 s,
//     so a1 and a2 are each other's buddy, as are b1 and b2): a cut between
//     a1 and a2 for 12 s (a1 must acknowledge nothing while it cannot reach
//     its buddy); a1 killed with 200 delayed tasks on it, a2 takes over, a1
//     restarted on its disk reconciles; a1 killed with 200 more, its data
//     directory deleted and kept down: a2 takes over and runs them.
//
// After every step it checks and tabulates:
//
//   - acked → done: every enqueue acknowledged so far is eventually in a
//     pool's completion log (within 90 s);
//   - duplicates: completions of an id beyond its first, counted (at
//     least once delivery: a pool frozen or cut off finishes tasks whose
//     leases were given to another), bounded by the test;
//   - views: every running node lists exactly the true membership (4
//     nodes and 4 pools alive) within the stated bound (45 s);
//   - alone: no node stays in a mesh of its own (sees no other node, or
//     reports itself not ready) for 3 polls in a row (about 3 s), during
//     the fault or after it; a single poll is reported, not failed.
//
// It skips, saying why, only when network namespaces are unavailable (not
// root, or `ip netns add` fails). It installs iptables with apt-get when
// it is missing. Every namespace, link and mount it creates is named dep*
// ($NETDRILL_PREFIX* when set, up to 6 characters, to tell one engineer's
// run from another's on a shared machine) and removed at the end (and
// before it starts, after a crashed run).
package netdrill
