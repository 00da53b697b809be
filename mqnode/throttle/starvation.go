package throttle

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"sync"
	"time"
)

// StarvationSampler returns how starved of CPU the node's own process was
// since its previous call, as a scheduling delay. ProcessStarvation is the
// real one; tests inject their own.
type StarvationSampler func() (time.Duration, error)

// schedLatencies is the Go runtime's histogram of the time goroutines
// spent runnable before they ran.
const schedLatencies = "/sched/latencies:seconds"

// ProcessStarvation returns a sampler of this process's own CPU
// starvation: the larger of
//
//   - the Go scheduler's p99 latency since the last call (runtime/metrics
//     /sched/latencies:seconds: how long a runnable goroutine — a request
//     handler, the store's writer — waited to run), and
//   - on Linux, the kernel's mean run-queue wait per time slice of the
//     process's threads (/proc/self/task/*/schedstat: how long a thread
//     that could run waited for a CPU).
//
// Both measure the node's own trouble, not the host's load: a host busy
// with other services (in their own scheduling groups) leaves a light node
// with delays of tens to hundreds of microseconds, while handlers
// competing with the node thread for thread, or the node's own work
// exceeding its CPU, push them to milliseconds.
func ProcessStarvation() StarvationSampler {
	var (
		mu       sync.Mutex
		sample   = []metrics.Sample{{Name: schedLatencies}}
		prev     []uint64
		lastWait uint64
		lastRuns uint64
	)
	return func() (time.Duration, error) {
		mu.Lock()
		defer mu.Unlock()
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindFloat64Histogram {
			return 0, fmt.Errorf("read %s: not supported by this Go runtime", schedLatencies)
		}
		h := sample[0].Value.Float64Histogram()
		goDelay := time.Duration(0)
		if prev != nil {
			goDelay = histQuantile(h, prev, 0.99)
		}
		prev = append(prev[:0], h.Counts...)
		osDelay := time.Duration(0)
		if wait, runs, ok := threadSchedStat(); ok {
			if lastRuns > 0 && runs > lastRuns && wait >= lastWait {
				osDelay = time.Duration((wait - lastWait) / (runs - lastRuns))
			}
			lastWait, lastRuns = wait, runs
		}
		return max(goDelay, osDelay), nil
	}
}

// histQuantile is quantile q of the counts h gained since prev, as the
// upper bound of the bucket it falls in (buckets are exponential, so
// within ~12 % of the true value).
func histQuantile(h *metrics.Float64Histogram, prev []uint64, q float64) time.Duration {
	var total uint64
	for i, c := range h.Counts {
		total += c - prev[i]
	}
	if total == 0 {
		return 0
	}
	want := uint64(q * float64(total))
	var seen uint64
	for i, c := range h.Counts {
		seen += c - prev[i]
		if seen > want || seen == total {
			up := h.Buckets[i+1]
			if up > 3600 { // the last bucket is open (+Inf)
				up = h.Buckets[i]
			}
			return time.Duration(up * float64(time.Second))
		}
	}
	return 0
}

// threadSchedStat sums the run-queue wait (ns) and time slices of every
// thread of this process (Linux /proc/self/task/*/schedstat: run time,
// wait time, slices). ok is false where it is not available.
func threadSchedStat() (wait, slices uint64, ok bool) {
	paths, err := filepath.Glob("/proc/self/task/*/schedstat")
	if err != nil || len(paths) == 0 {
		return 0, 0, false
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread exited
		}
		f := bytes.Fields(b)
		if len(f) < 3 {
			continue
		}
		w, err1 := strconv.ParseUint(string(f[1]), 10, 64)
		n, err2 := strconv.ParseUint(string(f[2]), 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		wait += w
		slices += n
		ok = true
	}
	return wait, slices, ok
}
