package main

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/mqmesh/mqmesh/worker"
)

// completionLog appends the id of every task a handler finished to a file
// (`mqmesh worker --completions`). Each id is written with one write(2)
// before the task is acked: a task acked is in the file even if the pool
// is killed right after (the page cache outlives the process), so an
// auditor can check that every acknowledged enqueue was completed, and
// count duplicates (ids that appear twice: completed, then redelivered
// because the ack was lost).
type completionLog struct {
	mu sync.Mutex
	f  *os.File
}

func openCompletionLog(path string) (*completionLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--completions: %w", err)
	}
	return &completionLog{f: f}, nil
}

// wrap records h's successes; a nil log returns h unchanged.
func (l *completionLog) wrap(h worker.Handler) worker.Handler {
	if l == nil {
		return h
	}
	return func(ctx context.Context, t *worker.Task) worker.Result {
		r := h(ctx, t)
		if r.Succeeded() {
			l.mu.Lock()
			_, err := l.f.WriteString(t.ID + "\n")
			l.mu.Unlock()
			if err != nil {
				// Not recorded: do not ack, so the audit never misses a task.
				return worker.Retry(fmt.Errorf("record completion: %w", err), 0)
			}
		}
		return r
	}
}

func (l *completionLog) Close() error { return l.f.Close() }
