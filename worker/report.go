package worker

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode"
)

// usage holds the backend calls reported while one task ran.
type usage struct {
	mu      sync.Mutex
	calls   map[string]uint64
	invalid string // first invalid backend name reported, for a warning
}

// Report counts n calls this task's handler made to backend (a short
// name such as "user-db"; letters, digits, '-' and '_'). The counts travel
// with the ack to the task's node, which uses them for the backend's
// mesh-wide budget (package mqnode/throttle): report every call to a
// backend that has a budget, or the budget cannot hold. Safe to call from
// any goroutine while the handler runs; calls after the handler returned
// are not counted. An invalid name is dropped with a warning in the log.
func (t *Task) Report(backend string, n int) {
	if t == nil || n <= 0 {
		return
	}
	u := &t.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	if subject.Validate("backend", backend) != nil {
		if u.invalid == "" {
			u.invalid = backend
		}
		return
	}
	if u.calls == nil {
		u.calls = map[string]uint64{}
	}
	u.calls[backend] += uint64(n)
}

// Call reports one call to backend and makes it: fn's error is returned.
//
//	err := task.Call("user-db", func() error { return db.Save(ctx, row) })
func (t *Task) Call(backend string, fn func() error) error {
	t.Report(backend, 1)
	return fn()
}

// takeCalls returns the reported calls (sorted by backend) and ends
// reporting for this delivery.
func (t *Task) takeCalls() ([]*mqnode.BackendCalls, string) {
	u := &t.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]*mqnode.BackendCalls, 0, len(u.calls))
	for b, n := range u.calls {
		out = append(out, &mqnode.BackendCalls{Backend: b, Calls: n})
	}
	slices.SortFunc(out, func(a, b *mqnode.BackendCalls) int { return strings.Compare(a.Backend, b.Backend) })
	u.calls = nil
	bad := u.invalid
	u.invalid = ""
	return out, bad
}

type taskKey struct{}

// withTask returns ctx carrying t, for Report(ctx, ...) deep in a handler.
func withTask(ctx context.Context, t *Task) context.Context {
	return context.WithValue(mqnode.ExtractTrace(ctx, t.Headers), taskKey{}, t)
}

// TaskFrom returns the task a handler's ctx belongs to, or nil.
func TaskFrom(ctx context.Context) *Task {
	t, _ := ctx.Value(taskKey{}).(*Task)
	return t
}

// Report counts n calls to backend for the task that ctx (a handler's
// context, or one derived from it) belongs to; outside a handler it does
// nothing. See Task.Report.
func Report(ctx context.Context, backend string, n int) {
	TaskFrom(ctx).Report(backend, n)
}

// Transport wraps an HTTP transport so that every request made with a
// handler's context counts as one call to backend:
//
//	client := &http.Client{Transport: worker.Transport("user-api", nil)}
//	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil) // ctx: the handler's
//
// base nil means http.DefaultTransport.
func Transport(backend string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripper{backend: backend, base: base}
}

type roundTripper struct {
	backend string
	base    http.RoundTripper
}

func (r roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	Report(req.Context(), r.backend, 1)
	return r.base.RoundTrip(req)
}
