package mqnode

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Topic propagation across the mesh.
//
// Every node subscribes to TopicSyncSubject over its in-process connection;
// NATS routes and gateways carry it to every node of the mesh. A node that
// changes a topic (op "topic") stores it and publishes the change at once;
// every node also publishes its whole table (tombstones included) every
// Config.TopicSyncInterval, and at start it publishes its table with
// want_full set, which makes every other node answer with theirs. Receivers
// apply a record when it wins (last writer wins, by version time then
// origin), so a node that was down or cut off catches up within one
// interval, and every node converges on the same table. The subject is
// for nodes only (the security roles give no other role publish rights).
const TopicSyncSubject = "mqtopic.sync"

// DefaultTopicSyncInterval is how often a node republishes its topics.
const DefaultTopicSyncInterval = 30 * time.Second

type topicSync struct {
	n    *Node
	sub  *nats.Subscription
	stop chan struct{}
	done chan struct{}
}

func (n *Node) selfID() string { return n.cfg.IDC + "." + n.cfg.Name }

// startTopicSync subscribes and starts the periodic publisher.
func (n *Node) startTopicSync() error {
	ts := &topicSync{n: n, stop: make(chan struct{}), done: make(chan struct{})}
	sub, err := n.nc.Subscribe(TopicSyncSubject, ts.receive)
	if err != nil {
		return fmt.Errorf("mqnode: subscribe %s: %w", TopicSyncSubject, err)
	}
	ts.sub = sub
	n.topicSync = ts
	go ts.run()
	return nil
}

func (ts *topicSync) close() {
	if ts == nil {
		return
	}
	_ = ts.sub.Unsubscribe()
	close(ts.stop)
	<-ts.done
}

// startupAsks are when, after start, a node asks the others for their
// topics: routes and gateways come up over the first seconds (the mesh
// adds them as gossip finds members), and a message sent before is lost.
var startupAsks = []time.Duration{0, time.Second, 3 * time.Second, 10 * time.Second}

func (ts *topicSync) run() {
	defer close(ts.done)
	t := time.NewTicker(ts.n.cfg.TopicSyncInterval)
	defer t.Stop()
	ask := time.NewTimer(0)
	defer ask.Stop()
	asked := 0
	for {
		select {
		case <-ts.stop:
			return
		case <-ask.C:
			ts.publish(ts.n.st.topics.all(), true)
			if asked++; asked < len(startupAsks) {
				ask.Reset(startupAsks[asked] - startupAsks[asked-1])
			}
		case <-t.C:
			if all := ts.n.st.topics.all(); len(all) > 0 {
				ts.publish(all, false)
			}
		}
	}
}

func (ts *topicSync) publish(topics []*wirepb.Topic, wantFull bool) {
	b, err := proto.Marshal(&wirepb.TopicSync{From: ts.n.selfID(), Topics: topics, WantFull: wantFull})
	if err == nil {
		err = ts.n.nc.Publish(TopicSyncSubject, b)
	}
	if err != nil {
		ts.n.log.Debug("topic sync not published", "err", err)
	}
}

// receive applies the topics another node published (on the connection's
// goroutine: store writes are quick, and ordering is kept).
func (ts *topicSync) receive(m *nats.Msg) {
	var msg wirepb.TopicSync
	if err := proto.Unmarshal(m.Data, &msg); err != nil {
		ts.n.log.Warn("malformed topic sync message ignored", "err", err)
		return
	}
	if msg.From == ts.n.selfID() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tp := range msg.Topics {
		if err := checkTopicRecord(tp); err != nil {
			ts.n.log.Warn("invalid topic record ignored", "from", msg.From, "err", err)
			continue
		}
		tp.Static = false
		if ok, err := ts.n.st.applyTopic(ctx, tp); err != nil {
			ts.n.log.Warn("topic change not stored", "topic", tp.Name, "from", msg.From, "err", err)
		} else if ok {
			ts.n.log.Info("topic change applied", "topic", tp.Name, "deleted", tp.Deleted, "from", msg.From)
		}
	}
	if msg.WantFull {
		if all := ts.n.st.topics.all(); len(all) > 0 {
			ts.publish(all, false)
		}
	}
}

// checkTopicRecord validates a topic record from outside.
func checkTopicRecord(tp *wirepb.Topic) error {
	if tp == nil {
		return fmt.Errorf("%w: empty topic", ErrBadRequest)
	}
	if err := subject.Validate("topic", tp.Name); err != nil {
		return err
	}
	if tp.Deleted {
		return nil
	}
	return validateSubscriptions("topic "+tp.Name, subsFromWire(tp.Subscriptions))
}
