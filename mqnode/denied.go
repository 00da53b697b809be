package mqnode

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// A NATS server refuses a publish or subscription the connection's user may
// not make by sending an asynchronous error, not a reply: a request to a
// denied subject would just time out. WatchPermissions turns that error into
// ErrPermissionDenied for the requests waiting on it.

// pendingCalls are a connection's requests in flight, by their subject.
type pendingCalls struct {
	mu   sync.Mutex
	subs map[*pendingCall]struct{}
	dead bool          // removed from waiting: register anew
	gone chan struct{} // closed when the last request is over: stops the watch
	shut bool          // gone is closed
}

// closeOnce closes calls.gone; calls.mu held.
func closeOnce(calls *pendingCalls) {
	if !calls.shut {
		calls.shut = true
		close(calls.gone)
	}
}

type pendingCall struct {
	subj   string
	cancel context.CancelCauseFunc
}

// waiting maps *nats.Conn to its *pendingCalls while any request waits.
var waiting sync.Map

// trackCall registers a request on nc to subj; the returned context ends
// with cause ErrPermissionDenied if the server refuses it. Call done when
// the request is over.
func trackCall(ctx context.Context, nc *nats.Conn, subj string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	pc := &pendingCall{subj: subj, cancel: cancel}
	var calls *pendingCalls
	for {
		fresh := &pendingCalls{subs: map[*pendingCall]struct{}{}, gone: make(chan struct{})}
		v, loaded := waiting.LoadOrStore(nc, fresh)
		calls = v.(*pendingCalls)
		if !loaded {
			watchConn(nc, calls)
		}
		calls.mu.Lock()
		if !calls.dead {
			break
		}
		calls.mu.Unlock()
	}
	calls.subs[pc] = struct{}{}
	calls.mu.Unlock()
	// A request sent while the connection is down would wait its whole
	// timeout in the reconnect buffer: fail it at once (the watch covers a
	// connection lost from here on).
	if st := nc.Status(); st != nats.CONNECTED {
		cancel(fmt.Errorf("%w: connection %s", ErrUnavailable, st))
	}
	return ctx, func() {
		calls.mu.Lock()
		delete(calls.subs, pc)
		if len(calls.subs) == 0 && !calls.dead {
			calls.dead = true
			waiting.CompareAndDelete(nc, calls)
		}
		if len(calls.subs) == 0 {
			closeOnce(calls)
		}
		calls.mu.Unlock()
		cancel(nil)
	}
}

// watchConn fails the requests of calls with ErrUnavailable when nc loses
// its server while they wait: their replies cannot come (a node stopping
// or a link cut), so the caller hears it now, not at its timeout. It
// watches until calls has no request left.
func watchConn(nc *nats.Conn, calls *pendingCalls) {
	ch := nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	go func() {
		defer nc.RemoveStatusListener(ch)
		select {
		case st := <-ch:
			cause := fmt.Errorf("%w: connection %s while waiting for the reply", ErrUnavailable, st)
			calls.mu.Lock()
			for pc := range calls.subs {
				pc.cancel(cause)
			}
			// Later requests register anew, with a watch of their own.
			if !calls.dead {
				calls.dead = true
				waiting.CompareAndDelete(nc, calls)
			}
			calls.mu.Unlock()
		case <-calls.gone:
		}
	}()
}

var violationRe = regexp.MustCompile(`(?i)(publish|subscription) to "([^"]+)"`)

// deny fails the requests of nc that a permission violation concerns: a
// denied publish those on its subject; a denied subscription (the reply
// inbox) all of them.
func deny(nc *nats.Conn, err error) {
	v, ok := waiting.Load(nc)
	if !ok {
		return
	}
	m := violationRe.FindStringSubmatch(err.Error())
	cause := fmt.Errorf("%w: %w", ErrPermissionDenied, err)
	calls := v.(*pendingCalls)
	calls.mu.Lock()
	defer calls.mu.Unlock()
	for pc := range calls.subs {
		if m == nil || !strings.EqualFold(m[1], "publish") || pc.subj == m[2] {
			pc.cancel(cause)
		}
	}
}

// WatchPermissions is a NATS option that makes the requests of a Client on
// the connection fail at once with ErrPermissionDenied when the server
// refuses them, instead of timing out. It wraps the error handler set by
// earlier options, so give it last; Dial and Node.Connect add it.
func WatchPermissions() nats.Option {
	return func(o *nats.Options) error {
		next := o.AsyncErrorCB
		o.AsyncErrorCB = func(nc *nats.Conn, sub *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				deny(nc, err)
			}
			if next != nil {
				next(nc, sub, err)
			}
		}
		return nil
	}
}
