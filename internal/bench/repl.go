package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
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
// then run at its best on --count tasks; with them, with mqnode-r1's
// drive, mqnode-r1 at fsync (both copies fsynced) and the unreplicated
// mqnode at fsync, for the cost of replication. The four runs take turns,
// --repl-rounds times; each reported result is its median round.
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
	// The four runs alternate, --repl-rounds times, so each sees the
	// machine as the others did; each figure is the median round's.
	type runKey struct{ peer, dur string }
	order := []runKey{{peerMQNodeR1, durAsync}, {peerJetStreamR3, durAsync}, {peerMQNodeR1, durFsync}, {peerMQNode, durFsync}}
	all := map[runKey][]Result{}
	for round := range o.replRounds {
		for _, k := range order {
			if ctx.Err() != nil {
				break
			}
			d := drives[k.peer]
			if k.peer == peerMQNode {
				// The cost of replication is measured with the same client.
				d = drives[peerMQNodeR1]
			}
			fmt.Fprintf(w.log, "bench: repl round %d of %d\n", round+1, o.replRounds)
			res := runPeer(ctx, o, w.with(d, ""), root, k.peer, k.dur)
			if !res.OK {
				errs = append(errs, fmt.Errorf("%s %s: %s", res.Peer, res.Durability, failure(res)))
			}
			all[k] = append(all[k], res)
			p.Rounds = append(p.Rounds, res)
		}
	}
	med := func(k runKey) Result { return median(all[k]) }
	p.MQNode, p.JetStream = med(order[0]), med(order[1])
	p.Ratio = newRatio(p.MQNode, p.JetStream)
	rf, un := med(order[2]), med(order[3])
	p.ReplicatedFsync, p.Unreplicated = &rf, &un
	p.ReplicationCost = newRatio(p.MQNode, un)
	p.ReplicationCostFsync = newRatio(rf, un)
	return p, grid, errors.Join(errs...)
}

// median returns the run with the median end-to-end time of rs, or the
// first failed run (a failure is never hidden by the others).
func median(rs []Result) Result {
	if len(rs) == 0 {
		return Result{}
	}
	for _, r := range rs {
		if !r.OK {
			return r
		}
	}
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b Result) int { return cmp.Compare(a.EndToEndS, b.EndToEndS) })
	return s[len(s)/2]
}
