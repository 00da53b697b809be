package mqnode

import (
	"fmt"
	"math"
	"time"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Every number a request carries is checked against a bound before it is
// used, and time arithmetic saturates instead of wrapping: a duration from
// the wire never becomes a negative time.Duration or a deadline in the past.
// Out of range is BAD_REQUEST naming the field. Two counts are clamped
// instead, as the README documents: a pull's max_tasks (to max_pull_batch)
// and max_wait_ms (to max_pull_wait), because both say "up to".

// MaxAttemptsLimit is the largest max_attempts a task may carry.
const MaxAttemptsLimit = 10000

// checkMs checks a millisecond count from the wire: 0 <= v <= limit.
func checkMs(field string, v int64, limit time.Duration) error {
	if msInRange(v, limit) {
		return nil
	}
	if v < 0 {
		return fmt.Errorf("%w: %s = %d: must not be negative", ErrBadRequest, field, v)
	}
	if lm := limit.Milliseconds(); v > lm {
		return fmt.Errorf("%w: %s = %d ms: above the node's limit of %d ms (%s)", ErrBadRequest, field, v, lm, limit)
	}
	return nil
}

// msInRange says whether checkMs accepts v: 0 <= v <= limit in ms.
func msInRange(v int64, limit time.Duration) bool {
	return v >= 0 && v <= limit.Milliseconds()
}

// msDuration converts a checked millisecond count to a Duration, saturating
// at the largest Duration instead of wrapping.
func msDuration(ms int64) time.Duration {
	if ms > math.MaxInt64/int64(time.Millisecond) {
		return math.MaxInt64
	}
	if ms < math.MinInt64/int64(time.Millisecond) {
		return math.MinInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// addMs adds two millisecond values, saturating at the int64 range.
func addMs(a, b int64) int64 {
	switch {
	case b > 0 && a > math.MaxInt64-b:
		return math.MaxInt64
	case b < 0 && a < math.MinInt64-b:
		return math.MinInt64
	}
	return a + b
}

// checkTiming checks the delay, not-before, ttl and attempts of one
// enqueue item (field and i name the item, e.g. items and 3 for
// "items[3]") at time now (ms).
func (s *store) checkTiming(field string, i int, delayMs, notBeforeMs, ttlMs int64, maxAttempts uint32, now int64) error {
	// The checks compare numbers first and build the field's name only
	// for an error: they run for every task of every enqueue.
	name := func(suffix string) string { return fmt.Sprintf("%s[%d]%s", field, i, suffix) }
	if !msInRange(delayMs, s.cfg.MaxDelay) {
		return checkMs(name(".delay_ms"), delayMs, s.cfg.MaxDelay)
	}
	if notBeforeMs < 0 {
		return fmt.Errorf("%w: %s = %d: must not be negative", ErrBadRequest, name(".not_before_unix_ms"), notBeforeMs)
	}
	if lim := addMs(now, s.cfg.MaxDelay.Milliseconds()); notBeforeMs > lim {
		return fmt.Errorf("%w: %s = %d: more than max_delay (%s) in the future", ErrBadRequest, name(".not_before_unix_ms"), notBeforeMs, s.cfg.MaxDelay)
	}
	if !msInRange(ttlMs, s.cfg.MaxTTL) {
		return checkMs(name(".ttl_ms"), ttlMs, s.cfg.MaxTTL)
	}
	if maxAttempts > MaxAttemptsLimit {
		return fmt.Errorf("%w: %s = %d: above the limit of %d", ErrBadRequest, name(".max_attempts"), maxAttempts, MaxAttemptsLimit)
	}
	return nil
}

// pullLimits checks a pull's numbers: max_tasks and max_wait_ms are clamped
// (to max_pull_batch and max_pull_wait), lease_ms above max_lease is refused.
func pullLimits(cfg Config, req *wirepb.PullRequest) (maxTasks int, wait, lease time.Duration, err error) {
	if req.MaxWaitMs < 0 {
		return 0, 0, 0, fmt.Errorf("%w: max_wait_ms = %d: must not be negative", ErrBadRequest, req.MaxWaitMs)
	}
	if err := checkMs("lease_ms", req.LeaseMs, cfg.MaxLease); err != nil {
		return 0, 0, 0, err
	}
	maxTasks = int(min(uint32(cfg.MaxPullBatch), max(req.MaxTasks, 1)))
	wait = msDuration(min(req.MaxWaitMs, cfg.MaxPullWait.Milliseconds()))
	lease = cfg.DefaultLease
	if req.LeaseMs > 0 {
		lease = msDuration(req.LeaseMs)
	}
	return maxTasks, wait, lease, nil
}
