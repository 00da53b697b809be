package mapreduce_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mqmesh/mqmesh/worker/mapreduce"
)

// Member is a group-chat member: connected to one access server, with a
// phone and maybe a desktop session.
type Member struct {
	ID      int
	Server  string
	Desktop bool
}

// Counts is what a delivery folds into.
type Counts struct{ Delivered, Failed int }

func addCounts[K comparable, T any](acc Counts, _ mapreduce.Batch[K, T], c Counts) Counts {
	return Counts{acc.Delivered + c.Delivered, acc.Failed + c.Failed}
}

// simulatedMembers makes n members spread over servers access servers.
func simulatedMembers(n, servers int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{ID: i, Server: fmt.Sprintf("access-%02d", i%servers), Desktop: i%3 == 0}
	}
	return ms
}

// deliverGroupMessage delivers one message to every member: per access
// server in batches of 50 on pool "rpc", and inside each batch a nested
// stage pushing per device kind on pool "push".
func deliverGroupMessage(ctx context.Context, pools *mapreduce.Pools, members []Member, work time.Duration) (Counts, error) {
	rpc, err := pools.Get("rpc")
	if err != nil {
		return Counts{}, err
	}
	push, err := pools.Get("push")
	if err != nil {
		return Counts{}, err
	}
	pushStage := mapreduce.Stage[Member, string, Counts]{
		Name: "push",
		Pool: push,
		Key: func(m Member) string {
			if m.Desktop {
				return "desktop"
			}
			return "phone"
		},
		BatchSize: 20,
		Policy:    mapreduce.Collect,
		Map: func(ctx context.Context, b mapreduce.Batch[string, Member]) (Counts, error) {
			if work > 0 {
				time.Sleep(work) // the simulated push
			}
			var c Counts
			for _, m := range b.Items {
				if m.ID%97 == 0 { // offline: not an error, a failed delivery
					c.Failed++
				} else {
					c.Delivered++
				}
			}
			return c, ctx.Err()
		},
	}
	deliver := mapreduce.Stage[Member, string, Counts]{
		Name:      "deliver",
		Pool:      rpc,
		Key:       func(m Member) string { return m.Server },
		BatchSize: 50,
		Policy:    mapreduce.Collect,
		Map: func(ctx context.Context, b mapreduce.Batch[string, Member]) (Counts, error) {
			return mapreduce.MapReduce(ctx, pushStage, b.Items, Counts{}, addCounts)
		},
	}
	return mapreduce.MapReduce(ctx, deliver, members, Counts{}, addCounts)
}

func Example_groupMessage() {
	pools, err := mapreduce.NewPools(mapreduce.PoolsConfig{"rpc": 4, "push": 8})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	members := simulatedMembers(1000, 10)
	total, err := deliverGroupMessage(ctx, pools, members, time.Millisecond)
	fmt.Println("delivered:", total.Delivered, "failed:", total.Failed, "err:", err)
	for _, s := range pools.Stats() {
		fmt.Printf("pool %s: size %d, busy %d, completed %d\n", s.Name, s.Size, s.Busy, s.Completed)
	}

	_, err = mapreduce.NewPools(mapreduce.PoolsConfig{"rpc": 0})
	fmt.Println(err)
	_, err = pools.Get("db")
	fmt.Println(errors.Is(err, mapreduce.ErrUnknownPool))
	// Output:
	// delivered: 989 failed: 11 err: <nil>
	// pool push: size 8, busy 0, completed 60
	// pool rpc: size 4, busy 0, completed 20
	// mapreduce: pools.rpc: size 0, want at least 1
	// true
}
