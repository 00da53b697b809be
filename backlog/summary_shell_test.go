package backlog_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/backlog/backlogpb"
	"github.com/mqmesh/mqmesh/mqnode"
)

// The publisher's summarizer over real NATS: of two nodes of an IDC only
// the elected one publishes summaries, naming the other's backlog (heard on
// the IDC's global tier); when the election moves, the other one takes
// over and the first falls silent.
func TestSummarizerFollowsTheElection(t *testing.T) {
	n, _, _ := startNode(t) // a node for its NATS server (its own publisher is n1 of IDC sh)
	var mu sync.Mutex
	var got []*backlogpb.Summary
	sc, err := n.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sub, err := sc.Subscribe(backlog.SummarySubject(backlog.TierGlobal, "idcX", 0), func(m *nats.Msg) {
		var s backlogpb.Summary
		if proto.Unmarshal(m.Data, &s) == nil {
			mu.Lock()
			got = append(got, &s)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sc.Flush(); err != nil {
		t.Fatal(err)
	}
	var leader atomic.Value
	leader.Store("x1")
	start := func(name string, ready uint64) *backlog.Publisher {
		nc, err := n.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		p, err := backlog.NewPublisher(nc, backlog.PublisherConfig{IDC: "idcX", Node: name, Logger: logger(t),
			Source: func() []mqnode.QueueLevel {
				return []mqnode.QueueLevel{{Queue: "push", Ready: ready, OldestReady: 3 * time.Second, EnqueuedTotal: ready}}
			},
			Summarize: func() bool { return leader.Load() == name },
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Kill)
		return p
	}
	x1, x2 := start("x1", 0), start("x2", 500)
	names := func(from string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range got {
			if s.Summarizer == from && len(s.Nodes) == 1 && s.Nodes[0].Node == "x2" && s.Nodes[0].Ready == 500 {
				return true
			}
		}
		return false
	}
	eventually(t, 5*time.Second, "x1's summary naming x2's backlog", func() bool { return names("x1") })
	if x2.Summaries() != 0 {
		t.Fatalf("x2, not elected, published %d summaries", x2.Summaries())
	}
	leader.Store("x2")
	eventually(t, 5*time.Second, "x2's summary once elected", func() bool { return names("x2") })
	// x1 reads the election once a second: by then it has stopped.
	time.Sleep(1100 * time.Millisecond)
	before := x1.Summaries()
	time.Sleep(1500 * time.Millisecond) // x1 must stay silent: a window, nothing to wait for
	if after := x1.Summaries(); after != before {
		t.Fatalf("x1 published %d summaries after losing the election", after-before)
	}
}
