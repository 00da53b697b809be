package mqnode

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mqnode/tracepb"
)

// TraceSubject is where every node answers trace lookups: a requester
// publishes one TraceRequest and hears from every node the request
// reaches (routes carry it through the IDC, gateways to the others).
const TraceSubject = "mqtrace.find"

// maxTaskIDLen bounds a looked-up id (task ids are 36-byte UUIDs).
const maxTaskIDLen = 128

// traceFind answers a TraceRequest with this node's events of the task.
func (s *service) traceFind(_ context.Context, b []byte) proto.Message {
	cfg := s.n.cfg
	rep := &tracepb.TraceReply{Idc: cfg.IDC, Node: cfg.Name}
	var req tracepb.TraceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		rep.Error = "bad request: " + err.Error()
		return rep
	}
	if req.TaskId == "" || len(req.TaskId) > maxTaskIDLen {
		rep.Error = fmt.Sprintf("bad request: task id of %d bytes (want 1..%d)", len(req.TaskId), maxTaskIDLen)
		return rep
	}
	evs, err := s.n.st.obs.tr.lookup(req.TaskId)
	if err != nil {
		rep.Error = err.Error()
	}
	rep.Events = evs
	if len(evs) > 0 {
		rep.ReplicatedTo, rep.ReplState, rep.ReplMode = s.n.rp.queueReplication(evs[0].Queue)
	}
	return rep
}

// FindTrace asks every node reachable over nc for the events of task id
// and returns the replies that had events (normally one: the node that
// owns the task). It returns as soon as a node answers with events, or
// when wait ends (nothing found: an empty result, no error).
func FindTrace(ctx context.Context, nc *nats.Conn, id string, wait time.Duration) ([]*tracepb.TraceReply, error) {
	if id == "" || len(id) > maxTaskIDLen {
		return nil, fmt.Errorf("%w: task id of %d bytes (want 1..%d)", ErrBadRequest, len(id), maxTaskIDLen)
	}
	body, err := proto.Marshal(&tracepb.TraceRequest{TaskId: id})
	if err != nil {
		return nil, err
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("trace: subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(TraceSubject, inbox, body); err != nil {
		return nil, fmt.Errorf("trace: publish: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var found []*tracepb.TraceReply
	var errs []error
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if len(found) == 0 && len(errs) > 0 {
				return nil, errors.Join(errs...)
			}
			return found, nil
		}
		var rep tracepb.TraceReply
		if err := proto.Unmarshal(m.Data, &rep); err != nil {
			errs = append(errs, fmt.Errorf("trace: malformed reply: %w", err))
			continue
		}
		if rep.Error != "" {
			errs = append(errs, fmt.Errorf("trace: node %s/%s: %s", rep.Idc, rep.Node, rep.Error))
		}
		if len(rep.Events) > 0 {
			found = append(found, &rep)
			return found, nil
		}
	}
}
