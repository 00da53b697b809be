package mqnode

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Operations, the last token of a node subject mq.<idc>.<node>.<op>.
const (
	OpEnqueue = "enq"
	OpPull    = "pull"
	OpAck     = "ack"
	OpStats   = "stat"
	OpDLQ     = "dlq"
	OpInfo    = "info"
	// OpQueueDelete removes an empty queue (admin).
	OpQueueDelete = "qdel"
)

// Subject returns the request subject of op on node name in idc.
func Subject(idc, name, op string) string { return "mq." + idc + "." + name + "." + op }

// IDSubject is where a node answers InfoRequest for the NATS server it runs
// (by server id), so a client connected anywhere learns which node it is on.
func IDSubject(serverID string) string { return "mqid." + serverID }

// maxInflight bounds concurrent requests; past it a node answers UNAVAILABLE.
const maxInflight = 8192

type service struct {
	n      *Node
	subs   []*nats.Subscription
	sem    chan struct{}
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
	lim    *limiter
}

func newService(n *Node) *service {
	ctx, cancel := context.WithCancel(context.Background())
	return &service{n: n, sem: make(chan struct{}, maxInflight), ctx: ctx, cancel: cancel, lim: newLimiter(n.cfg)}
}

func (s *service) start() error {
	cfg := s.n.cfg
	ops := map[string]func(context.Context, []byte) proto.Message{
		OpEnqueue: s.enqueue, OpPull: s.pull, OpAck: s.ack, OpStats: s.stats, OpDLQ: s.dlq, OpInfo: s.info, OpSummary: s.summary,
		OpQueueDelete: s.queueDelete,
		OpReplay:      s.replay, OpTopic: s.topic, // cmqops.go
	}
	for op, h := range s.n.extraOps {
		ops[op] = h
	}
	prefix := Subject(cfg.IDC, cfg.Name, "")
	route := func(m *nats.Msg) {
		op := m.Subject[len(prefix):]
		h := ops[op]
		if h == nil {
			s.reply(m, &wirepb.InfoReply{Error: toWireError(fmt.Errorf("%w: %s", ErrUnknownOp, m.Subject))})
			return
		}
		if op == OpPull && m.Reply != "" {
			done, err := s.lim.startPoll(clientKeys(m.Reply))
			if err != nil {
				s.reply(m, &wirepb.PullReply{Error: toWireError(err)})
				return
			}
			pull := h
			h = func(ctx context.Context, b []byte) proto.Message {
				defer done()
				return pull(ctx, b)
			}
			// A pull refused below never ran: give its slot back.
			if !s.dispatch(m, h) {
				done()
			}
			return
		}
		s.dispatch(m, h)
	}
	for _, sp := range []struct {
		subj string
		cb   nats.MsgHandler
	}{
		{prefix + "*", route},
		{IDSubject(s.n.ns.ID()), func(m *nats.Msg) { s.dispatch(m, s.info) }},
		{TraceSubject, func(m *nats.Msg) { s.dispatch(m, s.traceFind) }},
	} {
		sub, err := s.n.nc.Subscribe(sp.subj, sp.cb)
		if err != nil {
			return fmt.Errorf("mqnode: subscribe %s: %w", sp.subj, err)
		}
		// Requests are handled on their own goroutines; the subscription
		// only buffers until dispatch picks them up.
		_ = sub.SetPendingLimits(-1, -1)
		s.subs = append(s.subs, sub)
	}
	return s.n.nc.Flush()
}

func (s *service) stop(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	s.cancel() // long-polls return empty
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mqnode: requests still running at stop: %w", ctx.Err())
	}
}

// dispatch runs h on its own goroutine and reports whether it will run.
func (s *service) dispatch(m *nats.Msg, h func(context.Context, []byte) proto.Message) bool {
	if m.Reply == "" {
		return false // fire-and-forget publishes have nobody to answer
	}
	if client, _ := clientKeys(m.Reply); !s.lim.allow(client, time.Now()) {
		s.reply(m, &wirepb.InfoReply{Error: toWireError(fmt.Errorf("%w: request rate of this client above %g/s (max_request_rate)", ErrUnavailable, s.n.cfg.MaxRequestRate))})
		return false
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.reply(m, &wirepb.InfoReply{Error: toWireError(ErrClosed)})
		return false
	}
	select {
	case s.sem <- struct{}{}:
	default:
		s.mu.Unlock()
		s.reply(m, &wirepb.InfoReply{Error: toWireError(fmt.Errorf("%w: %d requests in flight", ErrUnavailable, maxInflight))})
		return false
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer func() {
			if r := recover(); r != nil {
				s.n.log.Error("request handler panicked", "subject", m.Subject, "panic", r, "stack", string(debug.Stack()))
				s.reply(m, &wirepb.InfoReply{Error: toWireError(fmt.Errorf("%w: handler panic: %v", ErrInternal, r))})
			}
			<-s.sem
			s.wg.Done()
		}()
		s.replied(m, h(s.ctx, m.Data))
	}()
	return true
}

func (s *service) reply(m *nats.Msg, r proto.Message) { _ = s.send(m, r) }

func (s *service) send(m *nats.Msg, r proto.Message) error {
	b, err := proto.Marshal(r)
	if err != nil {
		s.n.log.Error("encode reply", "subject", m.Subject, "err", err)
		return err
	}
	if err := m.Respond(b); err != nil {
		lvl := slog.LevelWarn
		if s.ctx.Err() != nil {
			lvl = slog.LevelDebug // stopping: the connection is going away
		}
		s.n.log.Log(context.Background(), lvl, "reply not sent", "subject", m.Subject, "bytes", len(b), "err", err)
		return err
	}
	return nil
}

func badRequest(err error) *wirepb.Error {
	return toWireError(fmt.Errorf("%w: malformed request body: %w", ErrBadRequest, err))
}

func (s *service) enqueue(ctx context.Context, b []byte) proto.Message {
	var req wirepb.EnqueueRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return &wirepb.EnqueueReply{Error: badRequest(err)}
	}
	res, err := s.n.st.enqueue(ctx, req.Queue, req.Items, req.Producer)
	return &wirepb.EnqueueReply{Error: toWireError(err), Results: res}
}

func (s *service) pull(ctx context.Context, b []byte) proto.Message {
	var req wirepb.PullRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return &wirepb.PullReply{Error: badRequest(err)}
	}
	cfg := s.n.cfg
	if err := subject.Validate("queue", req.Queue); err != nil {
		return &wirepb.PullReply{Error: toWireError(err)}
	}
	if req.WorkerId != "" {
		if err := subject.Validate("worker_id", req.WorkerId); err != nil {
			return &wirepb.PullReply{Error: toWireError(err)}
		}
	}
	maxTasks, wait, leaseDur, err := pullLimits(cfg, &req)
	if err != nil {
		return &wirepb.PullReply{Error: toWireError(err)}
	}
	if !s.n.rp.waitServing(ctx, wait) { // reconciling with the buddy (replreconcile.go)
		return &wirepb.PullReply{}
	}
	q, err := s.n.st.queue(ctx, req.Queue, true)
	if err != nil {
		return &wirepb.PullReply{Error: toWireError(err)}
	}
	member := ""
	if req.WorkerId != "" && s.n.WorkerMember != nil {
		member = s.n.WorkerMember(req.WorkerId)
	}
	p, err := q.pull(ctx, maxTasks, wait, leaseDur, leaseHolder(req.WorkerId, member))
	if err != nil && ctx.Err() != nil && len(p.ds) == 0 {
		err = nil // stopping: answer empty, the worker pulls elsewhere
	}
	return &wirepb.PullReply{Error: toWireError(err), Deliveries: p.ds, ReadyAfter: uint64(p.ready),
		ThrottledMs: p.throttled.Milliseconds(), Throttle: p.by}
}

func (s *service) ack(ctx context.Context, b []byte) proto.Message {
	var req wirepb.AckRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return &wirepb.AckReply{Error: badRequest(err)}
	}
	// Settling must not be cut short by a stop: finish the writes.
	res, err := s.n.st.ack(context.WithoutCancel(ctx), req.Items)
	return &wirepb.AckReply{Error: toWireError(err), Results: res}
}

func (s *service) stats(ctx context.Context, b []byte) proto.Message {
	var req wirepb.StatsRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return &wirepb.StatsReply{Error: badRequest(err)}
	}
	th := s.n.st.th
	rep := &wirepb.StatsReply{Node: s.n.info(), NodeThrottles: throttleStates(th.NodeStates()), Backends: backendStats(th.Backends()),
		Replication: s.n.Replication()}
	names := []string{req.Queue}
	if req.Queue == "" {
		names = s.n.st.queueNames()
		slices.Sort(names)
		names = names[sort.SearchStrings(names, req.After+"\x00"):] // past after
	} else if err := subject.Validate("queue", req.Queue); err != nil {
		rep.Error = toWireError(err)
		return rep
	}
	budget, used := s.n.st.replyBudget()-proto.Size(rep), 0
	for _, name := range names {
		q, err := s.n.st.queue(ctx, name, false)
		if err != nil {
			rep.Error = toWireError(err)
			return rep
		}
		st, err := q.stats()
		if err != nil {
			rep.Error = toWireError(err)
			return rep
		}
		if used += proto.Size(st) + 8; used > budget && len(rep.Queues) > 0 {
			rep.Next = rep.Queues[len(rep.Queues)-1].Queue // page by bytes
			return rep
		}
		rep.Queues = append(rep.Queues, st)
	}
	return rep
}

func (s *service) dlq(ctx context.Context, b []byte) proto.Message {
	var req wirepb.DLQRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return &wirepb.DLQReply{Error: badRequest(err)}
	}
	if err := subject.Validate("queue", req.Queue); err != nil {
		return &wirepb.DLQReply{Error: toWireError(err)}
	}
	q, err := s.n.st.queue(ctx, req.Queue, false)
	if err != nil {
		return &wirepb.DLQReply{Error: toWireError(err)}
	}
	rep := &wirepb.DLQReply{}
	switch req.Op {
	case wirepb.DLQOp_DLQ_LIST:
		rep.Tasks, rep.Next, err = s.n.st.dlqList(q, req.After, int(req.Limit))
	case wirepb.DLQOp_DLQ_REQUEUE, wirepb.DLQOp_DLQ_PURGE:
		rep.Affected, err = s.n.st.dlqChange(context.WithoutCancel(ctx), q, req.DeadIds, req.Op == wirepb.DLQOp_DLQ_REQUEUE)
	default:
		err = fmt.Errorf("%w: unknown dlq op %d", ErrBadRequest, req.Op)
	}
	rep.Error = toWireError(err)
	return rep
}

func (s *service) info(ctx context.Context, b []byte) proto.Message {
	var req wirepb.InfoRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return &wirepb.InfoReply{Error: badRequest(err)}
	}
	return &wirepb.InfoReply{Node: s.n.info()}
}

func (n *Node) info() *wirepb.NodeInfo {
	return &wirepb.NodeInfo{
		Name: n.cfg.Name, Idc: n.cfg.IDC, Version: Version, Durability: string(n.cfg.Durability),
		StartedUnixMs: n.st.started.UnixMilli(), ServerId: n.ns.ID(), MaxPayload: int64(n.cfg.MaxPayload), Host: n.cfg.Host,
	}
}

func (s *service) queueDelete(ctx context.Context, b []byte) proto.Message {
	var req wirepb.QueueDeleteRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return &wirepb.QueueDeleteReply{Error: badRequest(err)}
	}
	return &wirepb.QueueDeleteReply{Error: toWireError(s.n.st.deleteQueue(context.WithoutCancel(ctx), req.Queue))}
}
