package bench

import (
	"context"
	"errors"
	"fmt"
)

// durRepl is the replicated pairing of --pairs: mqnode with a buddy
// (replicas: 1, replication: sync) against a 3-server JetStream R3
// stream, with the unreplicated mqnode at fsync beside them for the cost
// of replication.
const durRepl = "repl"

// replNotes explain the repl pairing in the report.
var replNotes = []string{
	"repl pairing: mqnode-r1 is two mqnodes in one child process, the second the first's buddy (replicas: 1, replication: sync: an enqueue is acknowledged once the buddy has it under its durability); clients use the primary",
	"repl pairing: jetstream-r3 is three JetStream servers clustered over routes on loopback in one child process, a work-queue stream of Replicas: 3 at the default sync (acknowledged once 2 of 3 servers have it, no fsync per message); clients connect to all three",
	"repl pairing: async_r1_sync = local durability async on both nodes; fsync_r1_sync = fsync on both; the unreplicated mqnode at fsync runs with mqnode-r1's drive; replication cost = replicated / unreplicated fsync",
}

// runReplPair runs the replicated pairing: each of mqnode-r1 and
// jetstream-r3 tuned on its own grid (--tune-count-repl tasks per run),
// then run at its best on --count tasks; then, with mqnode-r1's drive,
// mqnode-r1 at fsync (both copies fsynced) and the unreplicated mqnode at
// fsync, right after each other, for the cost of replication.
func runReplPair(ctx context.Context, o *nodeOptions, w *workload, root string) (Pair, []GridRun, error) {
	p := Pair{Pair: durRepl}
	var grid []GridRun
	var errs []error
	to := *o
	to.tuneCount = o.tuneCountRepl
	drives := map[string]Drive{}
	for _, pn := range []string{peerMQNodeR1, peerJetStreamR3} {
		drives[pn] = baseline(pn, o)
		if !o.tune || ctx.Err() != nil {
			continue
		}
		runs, best, err := tunePeer(ctx, &to, w, root, pn, durAsync)
		grid = append(grid, runs...)
		if err != nil {
			errs = append(errs, fmt.Errorf("tune %s: %w", pn, err))
			continue
		}
		drives[pn] = best
	}
	run := func(pn, dur string) Result {
		d := drives[pn]
		if pn == peerMQNode {
			// The cost of replication is measured with the same client.
			d = drives[peerMQNodeR1]
		}
		res := runPeer(ctx, o, w.with(d, ""), root, pn, dur)
		if !res.OK {
			errs = append(errs, fmt.Errorf("%s %s: %s", res.Peer, res.Durability, failure(res)))
		}
		return res
	}
	p.MQNode = run(peerMQNodeR1, durAsync)
	p.JetStream = run(peerJetStreamR3, durAsync)
	p.Ratio = newRatio(p.MQNode, p.JetStream)
	rf := run(peerMQNodeR1, durFsync)
	un := run(peerMQNode, durFsync)
	p.ReplicatedFsync, p.Unreplicated = &rf, &un
	p.ReplicationCost = newRatio(p.MQNode, un)
	p.ReplicationCostFsync = newRatio(rf, un)
	return p, grid, errors.Join(errs...)
}
