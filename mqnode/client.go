package mqnode

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Wire types used by the client API. They are the protobuf messages of
// wirepb, aliased so callers need not import it.
type (
	Task          = wirepb.Task
	EnqueueItem   = wirepb.EnqueueItem
	EnqueueResult = wirepb.EnqueueResult
	Delivery      = wirepb.Delivery
	AckItem       = wirepb.AckItem
	BackendCalls  = wirepb.BackendCalls
	StatsReply    = wirepb.StatsReply
	ThrottleState = wirepb.ThrottleState
	BackendStats  = wirepb.BackendStats
	AckResult     = wirepb.AckResult
	QueueStats    = wirepb.QueueStats
	NodeInfo      = wirepb.NodeInfo
	DeadTask      = wirepb.DeadTask
)

// DefaultRequestTimeout bounds a request whose context has no deadline.
const DefaultRequestTimeout = 10 * time.Second

// Client talks to one node over a NATS connection. It is safe for
// concurrent use. Requests go to mq.<idc>.<node>.<op>; NATS routes them to
// the node wherever it is in the mesh.
type Client struct {
	nc      *nats.Conn
	idc     string
	node    string
	ownConn bool
}

// NewClient returns a client of node name in idc over nc. The caller keeps
// ownership of nc.
func NewClient(nc *nats.Conn, idc, name string) *Client {
	return &Client{nc: nc, idc: idc, node: name}
}

// Dial connects to the NATS URL of a node and finds out which node serves
// it. Close the client to close the connection.
func Dial(ctx context.Context, url string, opts ...nats.Option) (*Client, error) {
	opts = append(append([]nats.Option{nats.Name("mqmesh-client")}, opts...), WatchPermissions())
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: connect %s: %w", ErrUnavailable, url, err)
	}
	c := &Client{nc: nc, ownConn: true}
	var rep wirepb.InfoReply
	if err := c.call(ctx, IDSubject(nc.ConnectedServerId()), &wirepb.InfoRequest{}, &rep, func() *wirepb.Error { return rep.Error }); err != nil {
		nc.Close()
		return nil, fmt.Errorf("identify node at %s: %w", url, err)
	}
	c.idc, c.node = rep.Node.GetIdc(), rep.Node.GetName()
	return c, nil
}

// Conn returns the client's NATS connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// Node returns the IDC and name of the node this client talks to.
func (c *Client) Node() (idc, name string) { return c.idc, c.node }

// Close closes the connection if the client opened it.
func (c *Client) Close() {
	if c.ownConn {
		c.nc.Close()
	}
}

// call sends req to subj and decodes the reply into rep; errOf extracts the
// reply's error after decoding.
func (c *Client) call(ctx context.Context, subj string, req, rep proto.Message, errOf func() *wirepb.Error) error {
	b, err := proto.Marshal(req)
	if err != nil {
		return fmt.Errorf("%w: encode request: %w", ErrBadRequest, err)
	}
	if mp := c.nc.MaxPayload(); mp > 0 && int64(len(b)) > mp {
		return fmt.Errorf("%w: request of %d bytes exceeds the server's max payload %d", ErrPayloadTooLarge, len(b), mp)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultRequestTimeout)
		defer cancel()
	}
	ctx, done := trackCall(ctx, c.nc, subj)
	defer done()
	m, err := c.nc.RequestWithContext(ctx, subj, b)
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, ErrPermissionDenied) || errors.Is(cause, ErrUnavailable) {
			return cause
		}
		if err == nats.ErrNoResponders {
			return fmt.Errorf("%w: no node answers %s", ErrUnavailable, subj)
		}
		return fmt.Errorf("%w: request %s: %w", ErrUnavailable, subj, err)
	}
	if err := proto.Unmarshal(m.Data, rep); err != nil {
		return fmt.Errorf("%w: malformed reply from %s: %w", ErrInternal, subj, err)
	}
	return fromWireError(errOf())
}

func (c *Client) subj(op string) string { return Subject(c.idc, c.node, op) }

// Enqueue stores tasks on queue and returns their ids once they are durable
// under the node's durability setting. A queue of "topic:T" fans each task
// out into T's matching subscriptions (Copies in each result).
func (c *Client) Enqueue(ctx context.Context, queue string, items ...*EnqueueItem) ([]*EnqueueResult, error) {
	if err := ValidateTarget("queue", queue); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidName, err)
	}
	stampItems(ctx, items)
	var rep wirepb.EnqueueReply
	err := c.call(ctx, c.subj(OpEnqueue), &wirepb.EnqueueRequest{Queue: queue, Items: items, Producer: c.producerName()}, &rep, func() *wirepb.Error { return rep.Error })
	if err != nil {
		return nil, err
	}
	if len(rep.Results) != len(items) {
		return nil, fmt.Errorf("%w: %d results for %d tasks", ErrInternal, len(rep.Results), len(items))
	}
	return rep.Results, nil
}

// PullRequest asks for up to MaxTasks ready tasks, waiting up to MaxWait for
// the first; each comes with a lease of Lease (0: node default).
type PullRequest struct {
	Queue    string
	MaxTasks int
	MaxWait  time.Duration
	Lease    time.Duration
	WorkerID string
}

// Pull leases tasks. It returns the deliveries and the node's ready count
// after the pull (a backlog hint). An empty result is not an error.
func (c *Client) Pull(ctx context.Context, r PullRequest) ([]*Delivery, uint64, error) {
	p, err := c.PullResult(ctx, r)
	return p.Deliveries, p.ReadyAfter, err
}

// Pulled is the whole answer to a pull.
type Pulled struct {
	Deliveries []*Delivery
	// ReadyAfter is the node's ready count after the pull.
	ReadyAfter uint64
	// Throttled > 0 says ready tasks were held back by the node's
	// overload protection (Throttle names which: "cpu",
	// "budget:<backend>"); they may go after about this long.
	Throttled time.Duration
	Throttle  string
}

// PullResult is Pull with the whole answer, including throttling.
func (c *Client) PullResult(ctx context.Context, r PullRequest) (Pulled, error) {
	if err := subject.Validate("queue", r.Queue); err != nil {
		return Pulled{}, fmt.Errorf("%w: %w", ErrInvalidName, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.MaxWait+DefaultRequestTimeout)
		defer cancel()
	}
	var rep wirepb.PullReply
	err := c.call(ctx, c.subj(OpPull), &wirepb.PullRequest{
		Queue: r.Queue, MaxTasks: uint32(max(r.MaxTasks, 1)), MaxWaitMs: r.MaxWait.Milliseconds(),
		LeaseMs: r.Lease.Milliseconds(), WorkerId: r.WorkerID,
	}, &rep, func() *wirepb.Error { return rep.Error })
	return Pulled{Deliveries: rep.Deliveries, ReadyAfter: rep.ReadyAfter,
		Throttled: time.Duration(rep.ThrottledMs) * time.Millisecond, Throttle: rep.Throttle}, err
}

// Ack settles deliveries in one request. The returned error is for the
// request as a whole; each item's own outcome is ItemErr(results[i]).
func (c *Client) Ack(ctx context.Context, items ...*AckItem) ([]*AckResult, error) {
	var rep wirepb.AckReply
	if err := c.call(ctx, c.subj(OpAck), &wirepb.AckRequest{Items: items}, &rep, func() *wirepb.Error { return rep.Error }); err != nil {
		return nil, err
	}
	if len(rep.Results) != len(items) {
		return nil, fmt.Errorf("%w: %d results for %d ack items", ErrInternal, len(rep.Results), len(items))
	}
	return rep.Results, nil
}

// ItemErr is the error of one ack result (nil on success).
func ItemErr(r *AckResult) error { return fromWireError(r.GetError()) }

// AckOne settles a single delivery and returns its own error.
func (c *Client) AckOne(ctx context.Context, item *AckItem) (*AckResult, error) {
	res, err := c.Ack(ctx, item)
	if err != nil {
		return nil, err
	}
	return res[0], ItemErr(res[0])
}

// Stats returns the node's identity and per-queue statistics (one queue, or
// all when queue is empty).
func (c *Client) Stats(ctx context.Context, queue string) (*NodeInfo, []*QueueStats, error) {
	rep, err := c.StatsReply(ctx, queue)
	return rep.Node, rep.Queues, err
}

// StatsReply returns the node's whole stats reply: the node, its queues
// (one, or all when queue is ""), its node-wide throttles and the backends
// its handlers report calls to. A node pages many queues over several
// replies (each fits one message); StatsReply follows the pages.
func (c *Client) StatsReply(ctx context.Context, queue string) (*StatsReply, error) {
	var all *wirepb.StatsReply
	after := ""
	for {
		var rep wirepb.StatsReply
		err := c.call(ctx, c.subj(OpStats), &wirepb.StatsRequest{Queue: queue, After: after}, &rep, func() *wirepb.Error { return rep.Error })
		if all == nil {
			all = &rep
		} else {
			all.Queues = append(all.Queues, rep.Queues...)
		}
		if err != nil || rep.Next == "" || rep.Next <= after {
			all.Next = ""
			return all, err
		}
		after = rep.Next
	}
}

// Info returns the node's identity.
func (c *Client) Info(ctx context.Context) (*NodeInfo, error) {
	var rep wirepb.InfoReply
	err := c.call(ctx, c.subj(OpInfo), &wirepb.InfoRequest{}, &rep, func() *wirepb.Error { return rep.Error })
	return rep.Node, err
}

// DLQList returns a page of dead-letter records and the cursor of the next
// page ("" at the end).
func (c *Client) DLQList(ctx context.Context, queue, after string, limit int) ([]*DeadTask, string, error) {
	var rep wirepb.DLQReply
	err := c.call(ctx, c.subj(OpDLQ), &wirepb.DLQRequest{Queue: queue, Op: wirepb.DLQOp_DLQ_LIST, After: after, Limit: uint32(max(limit, 0))}, &rep, func() *wirepb.Error { return rep.Error })
	return rep.Tasks, rep.Next, err
}

// DLQRequeue makes dead-letter records ready tasks again (attempts reset):
// the named ones, or all when ids is empty. It returns how many.
func (c *Client) DLQRequeue(ctx context.Context, queue string, ids ...string) (uint64, error) {
	return c.dlqChange(ctx, queue, wirepb.DLQOp_DLQ_REQUEUE, ids)
}

// DLQPurge deletes dead-letter records: the named ones, or all when ids is
// empty. It returns how many.
func (c *Client) DLQPurge(ctx context.Context, queue string, ids ...string) (uint64, error) {
	return c.dlqChange(ctx, queue, wirepb.DLQOp_DLQ_PURGE, ids)
}

func (c *Client) dlqChange(ctx context.Context, queue string, op wirepb.DLQOp, ids []string) (uint64, error) {
	var rep wirepb.DLQReply
	err := c.call(ctx, c.subj(OpDLQ), &wirepb.DLQRequest{Queue: queue, Op: op, DeadIds: ids}, &rep, func() *wirepb.Error { return rep.Error })
	return rep.Affected, err
}

// Ack kinds, re-exported for callers of AckItem.
const (
	AckAck    = wirepb.AckKind_ACK
	AckNack   = wirepb.AckKind_NACK
	AckExtend = wirepb.AckKind_EXTEND
	AckDead   = wirepb.AckKind_DEAD
)

// AckKind says how an AckItem settles a delivery.
type AckKind = wirepb.AckKind

// DeleteQueue removes an empty queue from the node (admin role): it must
// hold no ready, delayed, leased or dead task, and not be declared in the
// node's config.
func (c *Client) DeleteQueue(ctx context.Context, queue string) error {
	var rep wirepb.QueueDeleteReply
	return c.call(ctx, c.subj(OpQueueDelete), &wirepb.QueueDeleteRequest{Queue: queue}, &rep, func() *wirepb.Error { return rep.Error })
}
