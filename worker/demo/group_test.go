package demo

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/worker"
)

func TestGroupSpecValidate(t *testing.T) {
	grp := func(members, servers int) *Group { return &Group{Members: members, Servers: servers} }
	for _, tc := range []struct {
		name string
		s    Spec
		want []string
	}{
		{"group", Spec{Kind: KindGroup, Group: grp(1000, 10)}, nil},
		{"group missing", Spec{Kind: KindGroup}, []string{"group: required for kind group"}},
		{"group on sleep", Spec{Kind: KindSleep, Group: grp(1, 1)}, []string{"group: only for kind group"}},
		{"group bad", Spec{Kind: KindGroup, Group: &Group{Members: 0, Servers: 3, BatchSize: -1, RPC: -1,
			FailRate: 2, Call: Latency{Value: -1}}},
			[]string{"group.members 0", "group.servers 3: want 1..members (0)", "group.batch_size -1",
				"group: mapreduce: pools.rpc: size -1", "group.call.value -1ns", "group.fail_rate 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkErr(t, tc.s.WithDefaults().Validate(), tc.want) })
	}
}

func TestHandleGroupDelivers(t *testing.T) {
	h := mustNew(t, Spec{Kind: KindGroup, Group: &Group{Members: 1000, Servers: 10, RPC: 4, Push: 8,
		Call: Latency{Value: time.Millisecond}, FailRate: 0.1}}, Env{Seed: 1})
	const tasks = 8
	var wg sync.WaitGroup
	for i := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.Handle(t.Context(), &worker.Task{ID: fmt.Sprint(i)})
		}()
	}
	wg.Wait()
	c := h.Counts()
	if c.Done != tasks || c.Delivered+c.Undelivered != tasks*1000 {
		t.Fatalf("counts %+v, want %d done, %d deliveries", c, tasks, tasks*1000)
	}
	if r := float64(c.Undelivered) / (tasks * 1000); math.Abs(r-0.1) > 0.03 {
		t.Errorf("undelivered share %.3f, want 0.1", r)
	}
	for _, st := range h.PoolStats() {
		// 10 servers × 2 batches of 50 per task; each batch pushes 5 batches of 10.
		want := map[string]uint64{"rpc": tasks * 20, "push": tasks * 100}[st.Name]
		if st.Completed != want || st.Busy != 0 || st.Waiting != 0 {
			t.Errorf("pool %+v, want %d completed and idle", st, want)
		}
	}
}

func TestHandleGroupHonoursContext(t *testing.T) {
	h := mustNew(t, Spec{Kind: KindGroup, Group: &Group{Members: 100, Servers: 2, Call: Latency{Value: time.Hour}}}, Env{Seed: 1})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	h.Handle(ctx, &worker.Task{ID: "x"})
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a group delivery took %s to see its deadline", d)
	}
	if c := h.Counts(); c.Cancelled != 1 || c.Done != 0 {
		t.Fatalf("counts %+v", c)
	}
}

func TestGroupSpecFromYAML(t *testing.T) {
	var q Queues
	if err := decodeStrict(`
chat:
  kind: group
  group: {members: 1000, servers: 10, batch_size: 50, rpc: 16, push: 32,
          call: {median: 2ms, p99: 20ms}, fail_rate: 0.01}
`, &q); err != nil {
		t.Fatal(err)
	}
	q = q.WithDefaults()
	if err := q.Validate(); err != nil {
		t.Fatal(err)
	}
	g := q["chat"].Group
	if g == nil || g.Members != 1000 || g.Servers != 10 || g.RPC != 16 || g.Push != 32 || g.FailRate != 0.01 || g.Call.Median != 2*time.Millisecond {
		t.Fatalf("group %+v", g)
	}
}
