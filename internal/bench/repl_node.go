package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// replicatedTimeout bounds the wait for the pair's first confirmed copy.
const replicatedTimeout = 60 * time.Second

// startMQNodePair starts peerMQNodeR1: a primary with replicas: 1 in sync
// mode and its buddy, two nodes in this process joined by a NATS route on
// loopback (mqnode.StartGroup), both at durability o.durability, and
// waits until the primary's copy to the buddy is confirmed. Clients use
// the primary.
func startMQNodePair(ctx context.Context, o serveOptions, log *slog.Logger) (string, func() error, error) {
	cfg := func(name string, replicas int) mqnode.Config {
		return mqnode.Config{
			Name: name, IDC: "bench", DataDir: filepath.Join(o.dir, name), Durability: nodeDurability(o.durability), Logger: log,
			// As for bench node's single mqnode: the CPU throttle off.
			Throttle: throttle.Config{CPU: throttle.CPUConfig{Disabled: true}},
			Replicas: replicas, Replication: mqnode.ReplicationSync,
		}
	}
	nodes, err := mqnode.StartGroup(ctx, cfg("primary", 1), cfg("buddy", 0))
	if err != nil {
		return "", nil, err
	}
	stop := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var errs []error
		for _, n := range nodes {
			errs = append(errs, n.Stop(sctx))
		}
		return errors.Join(errs...)
	}
	wctx, cancel := context.WithTimeout(ctx, replicatedTimeout)
	defer cancel()
	if err := nodes[0].WaitReplicated(wctx); err != nil {
		return "", nil, errors.Join(fmt.Errorf("mqnode-r1: %w", err), stop())
	}
	return nodes[0].ClientURL(), stop, nil
}

// replFigures reads the replication figures of the primary p is connected
// to.
func replFigures(ctx context.Context, p peer) (*ReplFigures, error) {
	mp, ok := p.(*mqnodePeer)
	if !ok {
		return nil, fmt.Errorf("mqnode-r1: client %T is not mqnode's", p)
	}
	rep, err := mp.prod.StatsReply(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("mqnode-r1: stats: %w", err)
	}
	st := rep.GetReplication()
	return &ReplFigures{State: st.GetState(), AckedRecords: st.GetAckedRecords(), Batches: st.GetBatches(),
		UnreplicatedAcks: st.GetUnreplicatedAcks(), LastBatchRTTMs: st.GetBatchRttMs()}, nil
}
