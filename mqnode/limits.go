package mqnode

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Per-client limits. NATS does not tell a subscriber who published a
// request, but a request's reply subject does: a connection's replies all
// share one inbox prefix (<inbox prefix>.<connection nuid>.<token>), and
// with secrets the inbox prefix names the role (secrets.InboxPrefix:
// _I.<role>). So a client is the reply subject without its last token, and
// its account is the inbox prefix of its role. A client that makes up a new
// inbox per request is still held by its account's share.

// clientKeys returns the client and account of a request's reply subject.
func clientKeys(reply string) (client, account string) {
	client = reply
	if i := strings.LastIndexByte(reply, '.'); i > 0 {
		client = reply[:i]
	}
	if strings.HasPrefix(reply, "_I.") {
		if i := strings.IndexByte(reply[3:], '.'); i > 0 {
			account = reply[:3+i]
		}
	}
	return client, account
}

// limiter enforces the per-client and per-account limits of a node.
type limiter struct {
	maxPolls        int // long polls in flight per client
	maxAccountPolls int // and per account
	rate            rate.Limit
	burst           int

	mu    sync.Mutex
	polls map[string]int
	rates map[string]*rate.Limiter
}

func newLimiter(cfg Config) *limiter {
	return &limiter{
		maxPolls: cfg.MaxPullsPerClient, maxAccountPolls: maxInflight * 3 / 4,
		rate: rate.Limit(cfg.MaxRequestRate), burst: max(1, int(cfg.MaxRequestRate)),
		polls: map[string]int{}, rates: map[string]*rate.Limiter{},
	}
}

// allow charges one request of the client to its rate; false past it.
func (l *limiter) allow(client string, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rates[client]
	if r == nil {
		if len(l.rates) >= 1<<16 {
			// Forget clients whose bucket is full again: they are idle.
			for k, v := range l.rates {
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.rates, k)
				}
			}
		}
		r = rate.NewLimiter(l.rate, l.burst)
		l.rates[client] = r
	}
	return r.AllowN(now, 1)
}

// startPoll admits a long poll of client in account; done ends it.
func (l *limiter) startPoll(client, account string) (done func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.polls[client] >= l.maxPolls {
		return nil, fmt.Errorf("%w: %d pulls in flight from this client (max_pulls_per_client)", ErrUnavailable, l.maxPolls)
	}
	if account != "" && l.polls["account "+account] >= l.maxAccountPolls {
		return nil, fmt.Errorf("%w: %d pulls in flight from role %s", ErrUnavailable, l.maxAccountPolls, strings.TrimPrefix(account, "_I."))
	}
	l.polls[client]++
	if account != "" {
		l.polls["account "+account]++
	}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, k := range []string{client, "account " + account} {
			if k == "account " {
				continue
			}
			if l.polls[k]--; l.polls[k] <= 0 {
				delete(l.polls, k)
			}
		}
	}, nil
}
