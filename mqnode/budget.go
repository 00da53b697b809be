package mqnode

// Memory bounded across queues: each queue pages its next ready tasks into
// an in-memory window of at most ready_buffer tasks and ready_buffer_bytes
// bytes, and all windows together draw on one node-wide budget,
// ready_budget. A queue refills only into what the budget has left, or its
// fair share of the budget (ready_budget / queues) if that is more, and
// always takes at least one task, so every queue makes progress; the rest of
// every backlog stays on disk. So 1,000 busy queues cost about ready_budget,
// not 1,000 × ready_buffer_bytes (at most twice the budget, plus one task
// per queue).

// readyShare is how many bytes a queue holding held bytes may buffer now
// (at least 1: a queue with an empty window pages in one task).
func (s *store) readyShare(held int) int {
	others := s.bufTotal.Load() - int64(held)
	room := s.cfg.ReadyBudget - others
	fair := s.cfg.ReadyBudget / max(s.nQueues.Load(), 1)
	return int(max(min(int64(s.cfg.ReadyBufferBytes), max(room, fair)), 1))
}

// addBuf changes a queue's buffered bytes and the node's total (q.mu held).
func (q *queue) addBuf(n int) {
	q.bufBytes += n
	q.s.bufTotal.Add(int64(n))
}
