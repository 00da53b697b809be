package mqnode

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Replies always fit one NATS message. The node publishes every reply on its
// own embedded server, whose max payload is Config.NATSMaxPayload; a reply
// above it is not delivered at all (the client would only see a timeout).
// So a pull returns as many tasks as fit (always at least one, which is why
// a task that could not fit one reply alone is refused at enqueue), a dlq
// list stops its page when the next record would not fit, and a reply that
// still fails to send gives its leases back at once.

// replyEnvelope is room kept in every reply for everything but the tasks:
// the reply's own fields, an error message, framing.
const replyEnvelope = 4 << 10

// deliveryOverhead bounds what a delivery adds to a stored task record:
// receipt, lease deadline, attempt and field tags.
const deliveryOverhead = 64

// taskExtraBound bounds what a stored task adds to its enqueue item: id,
// queue name, timestamps, attempt counters and a last error.
const taskExtraBound = 64 + subject.MaxTokenLen + maxReasonLen

// replyBudget is the largest size of the tasks or records of one reply.
func (s *store) replyBudget() int {
	return s.cfg.NATSMaxPayload - replyEnvelope
}

// checkReplyFit refuses an enqueue item whose task could not be delivered
// alone in one pull reply.
func (s *store) checkReplyFit(field string, i int, it *wirepb.EnqueueItem) error {
	if itemSizeBound(it)+taskExtraBound+deliveryOverhead <= s.replyBudget() {
		return nil // the common case, without proto.Size's reflective walk
	}
	size := proto.Size(it) + taskExtraBound + deliveryOverhead
	if size > s.replyBudget() {
		return fmt.Errorf("%w: %s[%d] would be a task of up to %d bytes, more than one reply can carry (%d: nats_max_payload %d less %d)",
			ErrPayloadTooLarge, field, i, size, s.replyBudget(), s.cfg.NATSMaxPayload, replyEnvelope)
	}
	return nil
}

// itemSizeBound is at least proto.Size(it): every field at its widest tag
// and length prefix (1 + 10 bytes), a header as a map entry of three.
func itemSizeBound(it *wirepb.EnqueueItem) int {
	const f = 11
	n := f + len(it.Payload) + f + len(it.DedupKey) + 4*f + len(it.ProtoReflect().GetUnknown())
	for k, v := range it.Headers {
		n += 3*f + len(k) + len(v)
	}
	return n
}

// releaseUnsent gives back the leases of a pull reply that could not be
// sent: the tasks are ready again at once and no attempt is counted (the
// worker never saw them).
func (s *store) releaseUnsent(ds []*wirepb.Delivery) int {
	n := 0
	for _, d := range ds {
		l := s.leases.take(d.Receipt)
		if l == nil {
			continue
		}
		l.q.unlease(l)
		n++
	}
	return n
}

// unlease puts a leased task back at the front of the ready window,
// unchanged: its record never left the store.
func (q *queue) unlease(l *lease) {
	readyAt, _, err := parseTaskKey(q.name, l.key)
	if err != nil {
		readyAt = 0
	}
	size := 0
	if frame, err := encodeTask(l.task); err == nil {
		size = len(frame)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.leased--
	if q.stopped {
		return
	}
	q.buf = append([]*entry{{key: l.key, readyAt: readyAt, task: l.task, size: size}}, q.buf...)
	q.addBuf(size)
	q.wakeLocked()
}

// replied sends a handler's reply; a pull reply that cannot be sent gives
// its leases back at once instead of letting them run out.
func (s *service) replied(m *nats.Msg, r proto.Message) {
	if s.send(m, r) == nil {
		return
	}
	if p, ok := r.(*wirepb.PullReply); ok && len(p.Deliveries) > 0 {
		n := s.n.st.releaseUnsent(p.Deliveries)
		s.n.log.Warn("pull reply not sent; leases released, no attempt counted", "subject", m.Subject, "tasks", n)
	}
}

// fitDead makes one dead-letter record fit a reply on its own: a record
// that holds both a task and its raw bytes (or a long reason) could be
// larger than any reply. The raw bytes go first, then the reason is cut;
// the record in the store is not changed.
func fitDead(d *wirepb.DeadTask, budget int) {
	if proto.Size(d) <= budget {
		return
	}
	if n := len(d.Raw); n > 0 {
		d.Raw = nil
		d.Reason += fmt.Sprintf(" [raw bytes (%d) left out: too large for one reply]", n)
	}
}
