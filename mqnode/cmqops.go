package mqnode

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Operations of replay and topics, admin operations both: "replay" writes
// tasks on an operator's behalf and is separate from "enq", so the security
// roles grant producers enqueue (topic:T included) without it; "topic"
// lists, creates and deletes topics.
const (
	OpReplay = "replay"
	OpTopic  = "topic"
)

func (s *service) replay(ctx context.Context, b []byte) proto.Message {
	var req wirepb.ReplayRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return &wirepb.ReplayReply{Error: badRequest(err)}
	}
	rep, err := s.n.st.replay(context.WithoutCancel(ctx), &req)
	if err != nil {
		return &wirepb.ReplayReply{Error: toWireError(err)}
	}
	return rep
}

func (s *service) topic(ctx context.Context, b []byte) proto.Message {
	var req wirepb.TopicRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return &wirepb.TopicReply{Error: badRequest(err)}
	}
	st := s.n.st
	switch req.Op {
	case wirepb.TopicOp_TOPIC_LIST:
		return &wirepb.TopicReply{Topics: st.topics.list()}
	case wirepb.TopicOp_TOPIC_CREATE, wirepb.TopicOp_TOPIC_DELETE:
	default:
		return &wirepb.TopicReply{Error: toWireError(fmt.Errorf("%w: unknown topic op %d", ErrBadRequest, req.Op))}
	}
	tp := &wirepb.Topic{Name: req.GetTopic().GetName(), Deleted: req.Op == wirepb.TopicOp_TOPIC_DELETE}
	if !tp.Deleted {
		tp.Subscriptions = req.GetTopic().GetSubscriptions()
	}
	if err := checkTopicRecord(tp); err != nil {
		return &wirepb.TopicReply{Error: toWireError(err)}
	}
	if st.topics.static[tp.Name] != nil {
		return &wirepb.TopicReply{Error: toWireError(fmt.Errorf("%w: topic %q is defined in the node config of %s; change it there", ErrBadRequest, tp.Name, s.n.selfID()))}
	}
	if tp.Deleted && st.topics.get(tp.Name) == nil {
		return &wirepb.TopicReply{Error: toWireError(fmt.Errorf("%w: topic %q", ErrNotFound, tp.Name))}
	}
	tp.Origin = s.n.selfID()
	tp.VersionUnixMs = st.nowMs()
	st.topics.mu.RLock()
	if cur := st.topics.stored[tp.Name]; cur != nil && cur.VersionUnixMs >= tp.VersionUnixMs {
		tp.VersionUnixMs = cur.VersionUnixMs + 1
	}
	st.topics.mu.RUnlock()
	if _, err := st.applyTopic(context.WithoutCancel(ctx), tp); err != nil {
		return &wirepb.TopicReply{Error: toWireError(err)}
	}
	if s.n.topicSync != nil {
		s.n.topicSync.publish([]*wirepb.Topic{tp}, false)
	}
	return &wirepb.TopicReply{Topics: []*wirepb.Topic{tp}}
}

// Replay sends one chunk of a replay (admin operation); call it again with
// req.After = reply.Next until Next is empty.
func (c *Client) Replay(ctx context.Context, req *wirepb.ReplayRequest) (*wirepb.ReplayReply, error) {
	var rep wirepb.ReplayReply
	err := c.call(ctx, c.subj(OpReplay), req, &rep, func() *wirepb.Error { return rep.Error })
	return &rep, err
}

// Topics lists the node's topics.
func (c *Client) Topics(ctx context.Context) ([]*wirepb.Topic, error) {
	return c.topicOp(ctx, &wirepb.TopicRequest{Op: wirepb.TopicOp_TOPIC_LIST})
}

// TopicCreate creates or replaces a topic; the node propagates it to the mesh.
func (c *Client) TopicCreate(ctx context.Context, name string, subs ...Subscription) (*wirepb.Topic, error) {
	tps, err := c.topicOp(ctx, &wirepb.TopicRequest{Op: wirepb.TopicOp_TOPIC_CREATE,
		Topic: &wirepb.Topic{Name: name, Subscriptions: subsToWire(subs)}})
	if err != nil || len(tps) == 0 {
		return nil, err
	}
	return tps[0], nil
}

// TopicDelete deletes a topic on the node and, by propagation, the mesh.
func (c *Client) TopicDelete(ctx context.Context, name string) error {
	_, err := c.topicOp(ctx, &wirepb.TopicRequest{Op: wirepb.TopicOp_TOPIC_DELETE, Topic: &wirepb.Topic{Name: name}})
	return err
}

func (c *Client) topicOp(ctx context.Context, req *wirepb.TopicRequest) ([]*wirepb.Topic, error) {
	var rep wirepb.TopicReply
	err := c.call(ctx, c.subj(OpTopic), req, &rep, func() *wirepb.Error { return rep.Error })
	return rep.Topics, err
}
