package demo

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mqmesh/mqmesh/worker/mapreduce"
)

// Group configures a group handler: each task is one group-chat message
// delivered to Members members spread over Servers simulated access
// servers, with the worker/mapreduce framework (see its package doc).
type Group struct {
	// Members of the group and the access Servers they are connected to
	// (member i to server i mod Servers). Required, 1..MaxGroupMembers
	// and 1..Members.
	Members int `yaml:"members"`
	Servers int `yaml:"servers"`
	// BatchSize is the most members of one call to an access server.
	// Default 50.
	BatchSize int `yaml:"batch_size"`
	// RPC and Push size the pools of the two stages: "rpc" bounds the
	// calls to access servers, "push" the per-member pushes each call
	// makes (a nested stage). Shared by the tasks of the handler.
	// Defaults 16 and 32.
	RPC  int `yaml:"rpc"`
	Push int `yaml:"push"`
	// Call is the latency of one access-server call (per batch).
	Call Latency `yaml:"call"`
	// FailRate is the share of members a delivery fails for (offline);
	// counted, not retried.
	FailRate float64 `yaml:"fail_rate"`
}

// MaxGroupMembers bounds Group.Members.
const MaxGroupMembers = 1_000_000

// pushBatch is the batch size of the nested push stage.
const pushBatch = 10

func (g Group) withDefaults() Group {
	if g.BatchSize == 0 {
		g.BatchSize = 50
	}
	if g.RPC == 0 {
		g.RPC = 16
	}
	if g.Push == 0 {
		g.Push = 32
	}
	g.Call = g.Call.WithDefaults()
	return g
}

func (g Group) validate() error {
	var errs []error
	if g.Members < 1 || g.Members > MaxGroupMembers {
		errs = append(errs, fmt.Errorf("group.members %d: want 1..%d", g.Members, MaxGroupMembers))
	}
	if g.Servers < 1 || g.Servers > max(g.Members, 1) {
		errs = append(errs, fmt.Errorf("group.servers %d: want 1..members (%d)", g.Servers, g.Members))
	}
	if g.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("group.batch_size %d: want at least 1", g.BatchSize))
	}
	if err := (mapreduce.PoolsConfig{"rpc": g.RPC, "push": g.Push}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("group: %w", err))
	}
	if err := g.Call.Validate(); err != nil {
		errs = append(errs, prefixErrors("group.call.", unprefix(err, "latency.")))
	}
	errs = append(errs, checkRate("group.fail_rate", g.FailRate))
	return errors.Join(errs...)
}

// unprefix strips a field prefix Latency.Validate puts on its errors.
func unprefix(err error, prefix string) error {
	return mapErrors(err, func(e error) error {
		msg, _ := strings.CutPrefix(e.Error(), prefix)
		return errors.New(msg)
	})
}

type member struct {
	id     int
	server string
}

type delivery struct{ delivered, failed int }

func addDelivery[K comparable, T any](acc delivery, _ mapreduce.Batch[K, T], d delivery) delivery {
	return delivery{acc.delivered + d.delivered, acc.failed + d.failed}
}

// groupJob is a group handler's pools and stages, built once.
type groupJob struct {
	h     *Handler
	pools *mapreduce.Pools
}

func newGroupJob(h *Handler) (*groupJob, error) {
	g := h.spec.Group
	pools, err := mapreduce.NewPools(mapreduce.PoolsConfig{"rpc": g.RPC, "push": g.Push})
	if err != nil {
		return nil, err
	}
	return &groupJob{h: h, pools: pools}, nil
}

// deliver delivers one message: members grouped by server into batches of
// BatchSize on pool "rpc" (each waiting one call latency), and in each
// batch a nested stage pushing to its members on pool "push".
func (j *groupJob) deliver(ctx context.Context, message string) (delivery, error) {
	g := j.h.spec.Group
	rpc, err := j.pools.Get("rpc")
	if err != nil {
		return delivery{}, err
	}
	push, err := j.pools.Get("push")
	if err != nil {
		return delivery{}, err
	}
	members := make([]member, g.Members)
	for i := range members {
		members[i] = member{id: i, server: "access-" + strconv.Itoa(i%g.Servers)}
	}
	pushStage := mapreduce.Stage[member, struct{}, delivery]{
		Name: "push", Pool: push, BatchSize: pushBatch, Policy: mapreduce.FailFast,
		Map: func(ctx context.Context, b mapreduce.Batch[struct{}, member]) (delivery, error) {
			var d delivery
			for range b.Items {
				if j.h.drawFail(g.FailRate) {
					d.failed++
				} else {
					d.delivered++
				}
			}
			return d, ctx.Err()
		},
	}
	deliver := mapreduce.Stage[member, string, delivery]{
		Name: "deliver " + message, Pool: rpc, BatchSize: g.BatchSize, Policy: mapreduce.FailFast,
		Key: func(m member) string { return m.server },
		Map: func(ctx context.Context, b mapreduce.Batch[string, member]) (delivery, error) {
			if !sleep(ctx, j.h.drawCall()) {
				return delivery{}, context.Cause(ctx)
			}
			return mapreduce.MapReduce(ctx, pushStage, b.Items, delivery{}, addDelivery)
		},
	}
	return mapreduce.MapReduce(ctx, deliver, members, delivery{}, addDelivery)
}

func (h *Handler) drawCall() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.spec.Group.Call.Sample(h.rng)
	if h.factor != 1 {
		d = time.Duration(float64(d) * h.factor)
	}
	return d
}

func (h *Handler) drawFail(rate float64) bool {
	if rate == 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rng.Float64() < rate
}

// PoolStats returns the stats of a group handler's pools (nil for other
// kinds).
func (h *Handler) PoolStats() []mapreduce.PoolStats {
	if h.group == nil {
		return nil
	}
	return h.group.pools.Stats()
}
