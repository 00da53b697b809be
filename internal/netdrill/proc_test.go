package netdrill

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one long-running child process (a node or a pool) in a host's
// namespace. start runs it with the same arguments every time: a restart
// is exactly the first start.
type proc struct {
	t    *testing.T
	h    host
	kind string // node or worker
	args []string
	env  []string
	dir  string // its files: stdout (ready line), stderr (log)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	runs int
}

// start launches the process and waits for its ready line on stdout.
func (p *proc) start() {
	p.t.Helper()
	p.mu.Lock()
	p.runs++
	out := filepath.Join(p.dir, fmt.Sprintf("%s.%d.out", p.kind, p.runs))
	logf, err := os.OpenFile(filepath.Join(p.dir, p.kind+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		p.t.Fatal(err)
	}
	stdout, err := os.Create(out)
	if err != nil {
		p.mu.Unlock()
		p.t.Fatal(err)
	}
	// ip netns exec execs the binary in its own process: the pid is the
	// node's (or pool's), so signals reach it directly.
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.h.ns()}, p.args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = stdout, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		p.t.Fatalf("start %s on %s: %v", p.kind, p.h.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		stdout.Close()
		logf.Close()
		close(done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		if bytes.IndexByte(b, '\n') >= 0 {
			return
		}
		select {
		case <-done:
			p.t.Fatalf("%s on %s exited before it was ready; log tail:\n%s", p.kind, p.h.name, tail(filepath.Join(p.dir, p.kind+".log"), 20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s on %s not ready after 60s; log tail:\n%s", p.kind, p.h.name, tail(filepath.Join(p.dir, p.kind+".log"), 20))
		}
	}
}

// signal sends sig to the process if it runs.
func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// running reports whether the process has not exited.
func (p *proc) running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits until the process is gone.
func (p *proc) kill() {
	p.signal(syscall.SIGCONT) // a stopped process dies only once resumed
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
}

// stop stops the process gracefully (SIGTERM), then kills it.
func (p *proc) stop() {
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGTERM)
	if !p.wait(20 * time.Second) {
		p.kill()
	}
}

func (p *proc) wait(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cli runs a short mqmesh command from the root namespace (the hosts are
// reachable through the bridge) and returns its stdout.
func cli(ctx context.Context, bin string, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(args[:min(2, len(args))], " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// membersView is what `mqmesh mesh members --json` says (the fields the
// drill reads).
type membersView struct {
	Self     string `json:"self"`
	Ready    bool   `json:"ready"`
	NotReady string `json:"not_ready"`
	Members  []struct {
		ID    string `json:"id"`
		Role  string `json:"role"`
		State string `json:"state"`
	} `json:"members"`
}

func (v membersView) alive() []string {
	var out []string
	for _, m := range v.Members {
		if m.State == "alive" {
			out = append(out, m.ID)
		}
	}
	return out
}

func parseMembers(s string) (membersView, error) {
	var v membersView
	err := json.Unmarshal([]byte(s), &v)
	return v, err
}

// buildBinary builds mqmesh into dir.
func buildBinary(t *testing.T, dir string) string {
	t.Helper()
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	bin := filepath.Join(dir, "mqmesh")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/mqmesh")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(mod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
