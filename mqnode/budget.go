package mqnode

// Memory bounded across queues: each queue pages its next ready tasks into
// an in-memory window of at most ready_buffer tasks and ready_buffer_bytes
// bytes, and all windows together draw on one node-wide budget,
// ready_budget. A queue refills only into what the budget has left (but
// always at least readyMinShare, and at least one task, so every queue makes
// progress); the rest of every backlog stays on disk. So 1,000 busy queues
// cost ready_budget, not 1,000 × ready_buffer_bytes.

// readyMinShare is the window a queue may always fill, budget or not.
const readyMinShare = 64 << 10

// readyShare is how many bytes a queue holding held bytes may buffer now.
func (s *store) readyShare(held int) int {
	others := s.bufTotal.Load() - int64(held)
	room := s.cfg.ReadyBudget - others
	return int(min(int64(s.cfg.ReadyBufferBytes), max(room, readyMinShare)))
}

// addBuf changes a queue's buffered bytes and the node's total (q.mu held).
func (q *queue) addBuf(n int) {
	q.bufBytes += n
	q.s.bufTotal.Add(int64(n))
}
