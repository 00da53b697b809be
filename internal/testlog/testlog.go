// Package testlog routes slog records to testing.TB.Log, so a test's logs
// show only when it fails, and drops records that arrive after the test
// ended (gossip and NATS goroutines may outlive a test by a moment).
package testlog

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

type writer struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// New returns a logger at Info level writing to t.
func New(t testing.TB) *slog.Logger {
	return NewLevel(t, slog.LevelInfo)
}

// NewLevel returns a logger at the given level writing to t.
func NewLevel(t testing.TB, level slog.Level) *slog.Logger {
	w := &writer{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
