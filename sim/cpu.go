package sim

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shirou/gopsutil/v4/process"

	"github.com/mqmesh/mqmesh/mqnode/throttle"
)

// hog burns CPU in this process for the cpu-hog action: goroutines in busy
// loops until calm. Every simulated host runs in this process on this
// machine, so the hog is on every host's CPU at once.
type hog struct {
	mu   sync.Mutex
	stop chan struct{}
	wg   sync.WaitGroup
}

// start runs n burners, replacing those already running.
func (h *hog) start(n int) {
	h.calm()
	h.mu.Lock()
	defer h.mu.Unlock()
	stop := make(chan struct{})
	h.stop = stop
	for range n {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					spin(1 << 16)
				}
			}
		}()
	}
}

// calm stops the burners and waits for them to end.
func (h *hog) calm() {
	h.mu.Lock()
	if h.stop != nil {
		close(h.stop)
		h.stop = nil
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// sink keeps the compiler from dropping spin's work.
var sink atomic.Uint64

// spin does n rounds of arithmetic (a few ns each).
func spin(n int) {
	x := uint64(n)
	for range n {
		x = x*6364136223846793005 + 1442695040888963407
	}
	sink.Add(x)
}

var spinRate struct {
	once  sync.Once
	perUs float64 // spin rounds per µs of CPU
}

// burnCPU does about d of CPU work on one core: a fixed amount, measured
// once (the fastest of a few trials, to discount a busy machine), so a
// contended CPU makes it take longer, as it would a real handler.
func burnCPU(d time.Duration) {
	if d <= 0 {
		return
	}
	spinRate.once.Do(func() {
		const n = 1 << 20
		for range 5 {
			t := time.Now()
			spin(n)
			if us := float64(time.Since(t).Microseconds()); us > 0 {
				spinRate.perUs = max(spinRate.perUs, n/us)
			}
		}
	})
	spin(int(spinRate.perUs * float64(d.Microseconds())))
}

// Samplers the CPU throttle of the simulated nodes can use.
const (
	// SamplerHost reads the whole machine's CPU (throttle.HostCPU): what a
	// node reads on a real host.
	SamplerHost = "host"
	// SamplerProcess reads this process's CPU only (the simulated mesh,
	// its handlers and the hog), as a share of all cores, so that other
	// programs on a shared machine do not move the throttle.
	SamplerProcess = "process"
)

// cpuSampler returns a new sampler of the kind named.
func cpuSampler(kind string) throttle.CPUSampler {
	if kind == SamplerProcess {
		return processCPU()
	}
	return throttle.HostCPU()
}

// processCPU samples this process's CPU time (user + system, read by
// gopsutil) over wall time and cores since its previous call.
func processCPU() throttle.CPUSampler {
	var mu sync.Mutex
	var p *process.Process
	var lastCPU float64
	var lastAt time.Time
	return func() (float64, error) {
		mu.Lock()
		defer mu.Unlock()
		if p == nil {
			var err error
			if p, err = process.NewProcess(int32(os.Getpid())); err != nil {
				return 0, fmt.Errorf("read process cpu: %w", err)
			}
		}
		ts, err := p.Times()
		if err != nil {
			return 0, fmt.Errorf("read process cpu: %w", err)
		}
		now, used := time.Now(), ts.User+ts.System
		prevCPU, prevAt := lastCPU, lastAt
		lastCPU, lastAt = used, now
		if prevAt.IsZero() {
			return 0, nil
		}
		wall := now.Sub(prevAt).Seconds() * float64(runtime.NumCPU())
		if wall <= 0 {
			return 0, nil
		}
		return min(max((used-prevCPU)/wall, 0), 1), nil
	}
}
