// Package ratelog rate-limits repeated log lines: a Limiter lets one line
// per key through every Every and counts the ones it held back, so the
// next line can say how many there were. An operator sees that something
// keeps failing without a flood of the same line.
//
//	var lim = ratelog.Limiter{Every: 10 * time.Second}
//	if ok, suppressed := lim.Allow("pull:"+node, time.Now()); ok {
//		log.Warn("pull failed", "err", err, "suppressed", suppressed)
//	}
//
// The zero Limiter lets one line per key per minute through. It is safe
// for concurrent use.
package ratelog

import (
	"sync"
	"time"
)

// maxKeys bounds the keys remembered: beyond it, keys quiet for Every are
// forgotten.
const maxKeys = 4096

// Limiter lets one line per key through every Every (default a minute).
type Limiter struct {
	Every time.Duration

	mu   sync.Mutex
	last map[string]seen
}

type seen struct {
	at         time.Time
	suppressed int
}

// Allow reports whether the line of key should be logged at now, and how
// many lines of key were held back since the last one let through.
func (l *Limiter) Allow(key string, now time.Time) (bool, int) {
	every := l.Every
	if every <= 0 {
		every = time.Minute
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]seen{}
	}
	s, ok := l.last[key]
	if ok && now.Sub(s.at) < every {
		s.suppressed++
		l.last[key] = s
		return false, 0
	}
	if len(l.last) > maxKeys {
		for k, e := range l.last {
			if now.Sub(e.at) >= every {
				delete(l.last, k)
			}
		}
	}
	l.last[key] = seen{at: now}
	return true, s.suppressed
}
