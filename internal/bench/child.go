package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
)

// Launcher returns the command that runs `bench serve` with args (the serve
// flags) in a child process. The default re-executes the running binary
// (os.Executable) with the command path of the bench command; tests plug in
// one that runs the test binary.
type Launcher func(serveArgs []string) (*exec.Cmd, error)

// selfLauncher re-executes this binary as `<path...> serve <args>`, where
// path is the bench command's path below the root (["bench"] under mqmesh).
func selfLauncher(path []string) Launcher {
	return func(serveArgs []string) (*exec.Cmd, error) {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find own binary: %w", err)
		}
		args := append(append(append([]string{}, path...), "serve"), serveArgs...)
		return exec.Command(exe, args...), nil
	}
}

// launcherFor returns launch, or, when it is nil, the launcher that
// re-executes this binary as cmd's parent: the bench command's path below
// the root, so the child runs `<binary> <path...> serve`.
func launcherFor(launch Launcher, cmd *cobra.Command) Launcher {
	if launch != nil {
		return launch
	}
	return selfLauncher(strings.Fields(cmd.Parent().CommandPath())[1:])
}

// Time limits of a child's life cycle.
const (
	childStartTimeout = 60 * time.Second
	childStopTimeout  = 30 * time.Second
)

// child is a running peer server process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	url   string
	pid   int

	waitDone chan struct{}
	waitErr  error
	stopOnce sync.Once
}

// startChild launches the child, waits for the URL line on its stdout and
// returns it running. On any error the process is killed and reaped.
func startChild(ctx context.Context, launch Launcher, o serveOptions, stderr io.Writer) (*child, error) {
	cmd, err := launch(o.args())
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if o.ownSession {
		ownSession(cmd)
	}
	lines := &firstLine{ch: make(chan string, 1)}
	cmd.Stdout = lines
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second // do not hang on pipes held by a dead child
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s server: %w", o.peer, err)
	}
	c := &child{cmd: cmd, stdin: stdin, pid: cmd.Process.Pid, waitDone: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.waitDone)
	}()
	timer := time.NewTimer(childStartTimeout)
	defer timer.Stop()
	select {
	case url := <-lines.ch:
		c.url = strings.TrimSpace(url)
		if o.peer != peerHog && !strings.HasPrefix(c.url, "nats://") && !strings.HasPrefix(c.url, "tls://") {
			c.stop()
			return nil, fmt.Errorf("%s server printed %q, want a nats:// or tls:// URL", o.peer, c.url)
		}
		return c, nil
	case <-c.waitDone:
		return nil, fmt.Errorf("%s server exited before it was ready: %v", o.peer, c.waitErr)
	case <-timer.C:
		c.stop()
		return nil, fmt.Errorf("%s server not ready within %s", o.peer, childStartTimeout)
	case <-ctx.Done():
		c.stop()
		return nil, context.Cause(ctx)
	}
}

// stop closes the child's stdin (its signal to shut down), waits for it to
// exit and kills it if it does not in time. Safe to call twice.
func (c *child) stop() error {
	c.stopOnce.Do(func() {
		_ = c.stdin.Close()
		timer := time.NewTimer(childStopTimeout)
		defer timer.Stop()
		select {
		case <-c.waitDone:
		case <-timer.C:
			_ = c.cmd.Process.Kill()
			<-c.waitDone
		}
	})
	var exit *exec.ExitError
	if errors.As(c.waitErr, &exit) {
		return fmt.Errorf("server process: %w", c.waitErr)
	}
	return nil
}

// firstLine is the child's stdout: it hands over the first line and
// discards the rest.
type firstLine struct {
	mu   sync.Mutex
	buf  []byte
	sent bool
	ch   chan string
}

func (f *firstLine) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sent {
		return len(p), nil
	}
	f.buf = append(f.buf, p...)
	if i := bytes.IndexByte(f.buf, '\n'); i >= 0 {
		f.sent = true
		f.ch <- string(f.buf[:i])
		f.buf = nil
	}
	return len(p), nil
}

// memory is a reading of /proc/<pid>/status, in bytes. rss = anon + file
// (+ shmem): anon is the heap and stacks, file the pages of mapped files
// (Badger maps its logs and tables), which the kernel can reclaim.
type memory struct {
	rss, hwm, anon, file int64
}

var statusFields = map[string]func(*memory) *int64{
	"VmRSS":   func(m *memory) *int64 { return &m.rss },
	"VmHWM":   func(m *memory) *int64 { return &m.hwm },
	"RssAnon": func(m *memory) *int64 { return &m.anon },
	"RssFile": func(m *memory) *int64 { return &m.file },
}

// readMemory reads VmRSS, VmHWM, RssAnon and RssFile of pid.
func readMemory(pid int) (memory, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		field := statusFields[k]
		if !ok || field == nil {
			continue
		}
		fields := strings.Fields(v) // "12345 kB"
		if len(fields) == 0 {
			continue
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("parse %s %q: %w", k, v, err)
		}
		*field(&m) = kb << 10
	}
	return m, sc.Err()
}

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// readCPU returns the user+system CPU time pid has used.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// sampler polls a child's memory and keeps the largest values seen.
type sampler struct {
	pid  int
	peak memory // written by the sampling goroutine until done is closed
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func startSampler(pid int, every time.Duration) *sampler {
	s := &sampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	s.sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *sampler) sample() {
	if m, err := readMemory(s.pid); err == nil {
		s.peak.rss = max(s.peak.rss, m.rss)
		s.peak.hwm = max(s.peak.hwm, m.hwm)
		s.peak.anon = max(s.peak.anon, m.anon)
		s.peak.file = max(s.peak.file, m.file)
	}
}

// finish stops sampling and returns the peaks, including one last sample.
// Safe to call twice.
func (s *sampler) finish() memory {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.sample()
	})
	return s.peak
}

// procAvailable says whether /proc exposes this platform's processes.
func procAvailable() bool {
	_, err := os.Stat("/proc/self/status")
	return err == nil
}
