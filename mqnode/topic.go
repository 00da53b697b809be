package mqnode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Topics.
//
// A topic names subscriptions: a queue, optionally only for tasks whose
// header equals a value (a tag filter). An enqueue to "topic:T" writes one
// task into every subscribed queue whose filter matches, all in ONE Badger
// transaction: either every copy is stored or none is. A task that matches
// no subscription fails the whole request with ErrNoSubscribers (nothing is
// dropped silently); an unknown topic is ErrNotFound. Streaming subtasks
// may name a topic as their queue too (AckItem.SubtaskQueue "topic:T").
//
// Topics come from two places:
//   - Config.Topics: static, on the nodes whose config has them.
//   - `mqmesh topic create|delete` (op "topic"): stored in Badger under
//     P|name and propagated to every node of the mesh (topicsync.go). The
//     last change wins (by version time, then origin); a delete is kept as
//     a tombstone so it propagates too.
//
// A static topic wins over a stored one of the same name on its node.
const (
	// TopicPrefix marks an enqueue target that is a topic: "topic:orders".
	TopicPrefix = "topic:"
	pfxTopic    = 'P'
)

// Subscription is one queue subscribed to a topic. With Header set, only
// tasks whose Header equals Value are written to it.
type Subscription struct {
	Queue  string `yaml:"queue"`
	Header string `yaml:"header,omitempty"`
	Value  string `yaml:"value,omitempty"`
}

// TopicTarget reports whether an enqueue target names a topic, and which.
func TopicTarget(target string) (string, bool) {
	return strings.CutPrefix(target, TopicPrefix)
}

// ValidateTarget checks an enqueue target: a queue name, or "topic:" and a
// topic name (both subject tokens).
func ValidateTarget(field, target string) error {
	if t, ok := TopicTarget(target); ok {
		return subject.Validate(field+" topic", t)
	}
	return subject.Validate(field, target)
}

func topicKey(name string) []byte { return append([]byte{pfxTopic}, name...) }

// validateSubscriptions checks a topic's subscriptions: at least one, each
// queue a valid name, a queue at most once, a filter's header non-empty.
func validateSubscriptions(field string, subs []Subscription) error {
	if len(subs) == 0 {
		return fmt.Errorf("%w: %s: a topic needs at least one subscription", ErrBadRequest, field)
	}
	seen := map[string]bool{}
	for i, sub := range subs {
		if err := subject.Validate(fmt.Sprintf("%s[%d].queue", field, i), sub.Queue); err != nil {
			return err
		}
		if seen[sub.Queue] {
			return fmt.Errorf("%w: %s: queue %q subscribed twice", ErrBadRequest, field, sub.Queue)
		}
		seen[sub.Queue] = true
		if sub.Header == "" && sub.Value != "" {
			return fmt.Errorf("%w: %s[%d]: a filter value needs a header", ErrBadRequest, field, i)
		}
	}
	return nil
}

func validateTopics(topics map[string][]Subscription) error {
	var errs []error
	for name, subs := range topics {
		if err := subject.Validate("topics key", name); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, validateSubscriptions("topics."+name, subs))
	}
	return errors.Join(errs...)
}

func subsToWire(subs []Subscription) []*wirepb.TopicSubscription {
	out := make([]*wirepb.TopicSubscription, len(subs))
	for i, s := range subs {
		out[i] = &wirepb.TopicSubscription{Queue: s.Queue, Header: s.Header, Value: s.Value}
	}
	return out
}

func subsFromWire(subs []*wirepb.TopicSubscription) []Subscription {
	out := make([]Subscription, len(subs))
	for i, s := range subs {
		out[i] = Subscription{Queue: s.GetQueue(), Header: s.GetHeader(), Value: s.GetValue()}
	}
	return out
}

// newer reports whether topic change a wins over b (last writer wins).
func newer(a, b *wirepb.Topic) bool {
	if b == nil {
		return true
	}
	if a.VersionUnixMs != b.VersionUnixMs {
		return a.VersionUnixMs > b.VersionUnixMs
	}
	return a.Origin > b.Origin
}

// topicTable holds a node's topics: static ones from the config and stored
// ones (tombstones included).
type topicTable struct {
	static map[string]*wirepb.Topic

	applyMu sync.Mutex // serializes check-then-write of stored changes
	mu      sync.RWMutex
	stored  map[string]*wirepb.Topic
}

func loadTopics(s *store) (*topicTable, error) {
	t := &topicTable{static: map[string]*wirepb.Topic{}, stored: map[string]*wirepb.Topic{}}
	for name, subs := range s.cfg.Topics {
		t.static[name] = &wirepb.Topic{Name: name, Subscriptions: subsToWire(subs), Static: true}
	}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxTopic}, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			raw, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var tp wirepb.Topic
			if err := decodeFrame(raw, &tp); err != nil {
				s.log.Error("unreadable topic record ignored", "key", string(it.Item().Key()), "err", err)
				continue
			}
			t.stored[tp.Name] = &tp
		}
		return nil
	})
	return t, storageErr(err)
}

// get returns the live topic called name (nil when none).
func (t *topicTable) get(name string) *wirepb.Topic {
	if st := t.static[name]; st != nil {
		return st
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if tp := t.stored[name]; tp != nil && !tp.Deleted {
		return tp
	}
	return nil
}

// list returns the live topics sorted by name.
func (t *topicTable) list() []*wirepb.Topic {
	t.mu.RLock()
	out := make([]*wirepb.Topic, 0, len(t.stored)+len(t.static))
	for name, tp := range t.stored {
		if !tp.Deleted && t.static[name] == nil {
			out = append(out, tp)
		}
	}
	t.mu.RUnlock()
	for _, tp := range t.static {
		out = append(out, tp)
	}
	slices.SortFunc(out, func(a, b *wirepb.Topic) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// all returns every stored record, tombstones included (for sync).
func (t *topicTable) all() []*wirepb.Topic {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*wirepb.Topic, 0, len(t.stored))
	for _, tp := range t.stored {
		out = append(out, tp)
	}
	return out
}

// applyTopic stores a topic change if it wins over what the node has. It
// reports whether it was applied.
func (s *store) applyTopic(ctx context.Context, tp *wirepb.Topic) (bool, error) {
	t := s.topics
	t.applyMu.Lock()
	defer t.applyMu.Unlock()
	t.mu.RLock()
	cur := t.stored[tp.Name]
	t.mu.RUnlock()
	if !newer(tp, cur) {
		return false, nil
	}
	frame, err := encodeFrame(tp)
	if err != nil {
		return false, err
	}
	op := &writeOp{
		prepare: func(w *wtx) error { w.set(topicKey(tp.Name), frame); return nil },
		after: func() {
			t.mu.Lock()
			t.stored[tp.Name] = tp
			t.mu.Unlock()
		},
	}
	return true, s.w.do(ctx, op)
}

// fanQueue is the part of a topic enqueue that goes to one queue: the
// items (and their indexes in the request) its subscription matches.
type fanQueue struct {
	q     *queue
	items []*wirepb.EnqueueItem
	idx   []int
	res   []*wirepb.EnqueueResult // set by putFanout: the copies written to q
}

// fanout plans a topic enqueue: which items go to which queue. Every item
// must match at least one subscription.
func (s *store) fanout(ctx context.Context, topic string, items []*wirepb.EnqueueItem) ([]*fanQueue, error) {
	if err := subject.Validate("topic", topic); err != nil {
		return nil, err
	}
	tp := s.topics.get(topic)
	if tp == nil {
		return nil, fmt.Errorf("%w: topic %q", ErrNotFound, topic)
	}
	fqs := make([]*fanQueue, len(tp.Subscriptions))
	for j, sub := range tp.Subscriptions {
		q, err := s.queue(ctx, sub.Queue, true)
		if err != nil {
			return nil, fmt.Errorf("topic %q subscription %q: %w", topic, sub.Queue, err)
		}
		fqs[j] = &fanQueue{q: q}
	}
	for i, it := range items {
		matched := false
		for j, sub := range tp.Subscriptions {
			if sub.Header != "" && it.Headers[sub.Header] != sub.Value {
				continue
			}
			fqs[j].items = append(fqs[j].items, it)
			fqs[j].idx = append(fqs[j].idx, i)
			matched = true
		}
		if !matched {
			return nil, fmt.Errorf("%w: task %d matches no subscription of topic %q; nothing was enqueued", ErrNoSubscribers, i, topic)
		}
	}
	return slices.DeleteFunc(fqs, func(f *fanQueue) bool { return len(f.items) == 0 }), nil
}

// putFanout writes every copy of a topic enqueue in the open transaction.
// results[i] lists item i's copies; its Id is the first copy's.
func (w *wtx) putFanout(fqs []*fanQueue, n int, producer string) ([]*wirepb.EnqueueResult, error) {
	results := make([]*wirepb.EnqueueResult, n)
	for i := range results {
		results[i] = &wirepb.EnqueueResult{Duplicate: true}
	}
	for _, f := range fqs {
		res, err := w.putTasks(f.q, f.items, producer)
		if err != nil {
			return nil, err
		}
		f.res = res
		for k, r := range res {
			out := results[f.idx[k]]
			out.Copies = append(out.Copies, &wirepb.TopicCopy{Queue: f.q.name, Id: r.Id, Duplicate: r.Duplicate})
			if out.Id == "" {
				out.Id = r.Id
			}
			out.Duplicate = out.Duplicate && r.Duplicate
		}
	}
	return results, nil
}

// countFanout adds the copies written to each queue's enqueue counter.
func countFanout(fqs []*fanQueue, results []*wirepb.EnqueueResult, now int64) {
	per := map[*queue]int64{}
	byName := map[string]*queue{}
	for _, f := range fqs {
		byName[f.q.name] = f.q
	}
	for _, r := range results {
		for _, c := range r.Copies {
			if !c.Duplicate {
				per[byName[c.Queue]]++
			}
		}
	}
	for q, n := range per {
		q.c.enqueued.add(now, n)
	}
}

// publish is an enqueue to a topic: one copy per matching subscription,
// all in one transaction.
func (s *store) publish(ctx context.Context, topic string, items []*wirepb.EnqueueItem, producer string) ([]*wirepb.EnqueueResult, error) {
	if err := subject.Validate("topic", topic); err != nil {
		return nil, err
	}
	if err := s.admitItems(items); err != nil { // ops.go: also refuses DISK_FULL
		return nil, err
	}
	fqs, err := s.fanout(ctx, topic, items)
	if err != nil {
		return nil, err
	}
	var results []*wirepb.EnqueueResult
	start := time.Now()
	op := &writeOp{
		prepare: func(w *wtx) error {
			var err error
			results, err = w.putFanout(fqs, len(items), producer)
			return err
		},
		after: func() { countFanout(fqs, results, s.nowMs()) },
	}
	if err := s.w.do(ctx, op); err != nil {
		return nil, err
	}
	traceFanout(s.obs, fqs, start, "", producer)
	return results, nil
}

// traceFanout records the enqueue of every copy (metrics and trace), with
// parent for subtasks and their producer.
func traceFanout(o *observer, fqs []*fanQueue, start time.Time, parent, producer string) {
	for _, f := range fqs {
		o.enqueued(f.q.name, f.items, f.res, start, parent, producer)
	}
}

// putFanoutSubtasks writes the subtasks of an ack to a topic; the ack's
// subtask ids are every copy's id, in request order.
func (w *wtx) putFanoutSubtasks(fqs []*fanQueue, items []*wirepb.EnqueueItem, res *wirepb.AckResult) error {
	results, err := w.putFanout(fqs, len(items), "")
	if err != nil {
		return err
	}
	res.SubtaskIds = res.SubtaskIds[:0]
	for _, r := range results {
		for _, c := range r.Copies {
			res.SubtaskIds = append(res.SubtaskIds, c.Id)
		}
	}
	w.effect(effect{q: fqs[0].q, onCommit: func() { countFanout(fqs, results, w.s.nowMs()) }})
	return nil
}
