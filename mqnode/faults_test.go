package mqnode

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The fault-injection suite damages a stopped node's files the ways disks
// and crashes do, restarts it (a child process, so a panic is an outcome,
// not the end of the test), drains it and classifies what happened to the
// tasks that were acknowledged. Silent loss and panic fail the test.
//
// CI runs one seed per case; MQNODE_FAULT_SEEDS=N runs N seeds per case
// (the long mode). MQNODE_FAULT_TABLE=path writes the table as markdown.

// Outcomes, best first.
const (
	outAllDelivered = "all delivered"
	outDeadLettered = "dead-lettered with reason"
	outLossReported = "loss reported"
	outRefused      = "refused to start with a message"
	outSilentLoss   = "SILENT LOSS"
	outPanic        = "PANIC"
)

// faultChild is a child node whose start may fail.
type faultChild struct {
	cmd    *exec.Cmd
	url    string
	stderr *lockedBuf
	exited chan struct{}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tryChild starts a small-store child node on dir; when it does not come
// up, it returns its stderr instead of failing the test.
func tryChild(t *testing.T, dir string, dur Durability) (*faultChild, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1", childSmallEnv+"=1", "MQNODE_CRASH_DIR="+dir, "MQNODE_CRASH_DURABILITY="+string(dur))
	fc := &faultChild{cmd: cmd, stderr: &lockedBuf{}, exited: make(chan struct{})}
	cmd.Stderr = fc.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		for s.Scan() {
		}
		_ = cmd.Wait()
		close(fc.exited)
	}()
	t.Cleanup(fc.kill)
	select {
	case url, ok := <-line:
		if ok && strings.HasPrefix(url, "nats://") {
			fc.url = url
			return fc, ""
		}
	case <-time.After(60 * time.Second):
		fc.kill()
		return nil, "did not start within 60s\n" + fc.stderr.String()
	}
	<-fc.exited
	return nil, fc.stderr.String()
}

func (fc *faultChild) kill() {
	_ = fc.cmd.Process.Kill()
	<-fc.exited
}

// stop ends the child cleanly (SIGTERM: the store is closed and flushed).
func (fc *faultChild) stop(t *testing.T) {
	_ = fc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-fc.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("child did not stop within 30s of SIGTERM")
	}
}

func panicked(stderr string) bool {
	for _, s := range []string{"panic:", "fatal error:", "SIGBUS", "SIGSEGV", "unexpected fault"} {
		if strings.Contains(stderr, s) {
			return true
		}
	}
	return false
}

// faultCase is one kind of damage.
type faultCase struct {
	file string // mem, vlog-active, vlog-old, sst, manifest, none
	how  string // flip, truncate, none
	kill bool   // stop with SIGKILL (the memtable stays in the .mem WAL)
}

func (c faultCase) String() string {
	stop := "stop"
	if c.kill {
		stop = "kill -9"
	}
	return fmt.Sprintf("%s %s (%s)", c.file, c.how, stop)
}

var faultCases = []faultCase{
	{"none", "none", false},
	{"none", "none", true},
	{"mem", "flip", true},
	{"mem", "truncate", true},
	{"vlog-active", "flip", true},
	{"vlog-active", "flip", false},
	{"vlog-active", "truncate", false},
	{"vlog-old", "flip", false},
	{"vlog-old", "truncate", false},
	{"sst", "flip", false},
	{"sst", "truncate", false},
	{"manifest", "flip", false},
	{"manifest", "truncate", false},
}

// faultTarget picks the file of a kind in dir.
func faultTarget(dir, kind string) (string, error) {
	var pattern string
	switch kind {
	case "mem":
		pattern = "*.mem"
	case "vlog-active", "vlog-old":
		pattern = "*.vlog"
	case "sst":
		pattern = "*.sst"
	case "manifest":
		pattern = "MANIFEST"
	}
	files, _ := filepath.Glob(filepath.Join(dir, pattern))
	slices.SortFunc(files, func(a, b string) int { return fileNum(a) - fileNum(b) })
	if len(files) == 0 || (kind == "vlog-old" && len(files) < 2) {
		return "", fmt.Errorf("no %s file in %s", kind, dir)
	}
	switch kind {
	case "vlog-active", "mem":
		return files[len(files)-1], nil
	}
	return files[0], nil
}

func fileNum(p string) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(p), filepath.Ext(p)))
	return n
}

// damage flips 4 bytes at seeded offsets in the written part of path, or
// truncates it at a seeded offset; it says what it did.
func damage(path, how string, rng *rand.Rand) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	used := len(bytes.TrimRight(b, "\x00")) // .mem and an active .vlog are preallocated
	if used < 16 {
		return "", fmt.Errorf("%s has %d written bytes", path, used)
	}
	// Skip the first 20 bytes (file headers), else every flip is a bad header.
	lo := min(20, used/2)
	switch how {
	case "flip":
		var offs []int
		for range 4 {
			o := lo + rng.IntN(used-lo)
			b[o] ^= byte(1 + rng.IntN(255))
			offs = append(offs, o)
		}
		return fmt.Sprintf("flipped bytes at %v of %d", offs, used), os.WriteFile(path, b, 0o644)
	case "truncate":
		o := lo + rng.IntN(used-lo)
		return fmt.Sprintf("cut at %d of %d", o, used), os.Truncate(path, int64(o))
	}
	return "", fmt.Errorf("unknown damage %q", how)
}

type faultResult struct {
	c                              faultCase
	seed                           uint64
	what                           string
	want, got, dead, lost, corrupt int
	redelivered                    int
	repaired, repairedOutcome      string
	delivered                      map[string]bool
	outcome, detail                string
}

// runFault builds a store, damages it, restarts it and classifies.
func runFault(t *testing.T, c faultCase, seed uint64) faultResult {
	r := faultResult{c: c, seed: seed}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	child, msg := tryChild(t, dir, DurabilityFsync)
	if child == nil {
		t.Fatalf("fresh child did not start: %s", msg)
	}
	cl, err := Dial(ctx, child.url, nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	// 3,000 tasks of 1 KiB (about 3 MB: two value-log files of 2 MiB),
	// then the first 500 acked: 2,500 acknowledged tasks must survive.
	want := map[string]bool{}
	payload := bytes.Repeat([]byte("p"), 1<<10)
	for i := 0; i < 60; i++ {
		items := make([]*EnqueueItem, 50)
		for j := range items {
			items[j] = &EnqueueItem{Payload: payload}
		}
		res, err := cl.Enqueue(ctx, "f", items...)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range res {
			want[x.Id] = true
		}
	}
	for acked := 0; acked < 500; {
		ds, _, err := cl.Pull(ctx, PullRequest{Queue: "f", MaxTasks: 500 - acked})
		if err != nil || len(ds) == 0 {
			t.Fatalf("setup pull: %d %v", len(ds), err)
		}
		var acks []*AckItem
		for _, d := range ds {
			acks = append(acks, &AckItem{Receipt: d.Receipt})
			delete(want, d.Task.Id)
		}
		if _, err := cl.Ack(ctx, acks...); err != nil {
			t.Fatal(err)
		}
		acked += len(ds)
	}
	cl.Close()
	if c.kill {
		child.kill()
	} else {
		child.stop(t)
	}
	if c.file != "none" {
		target, err := faultTarget(dir, c.file)
		if err != nil {
			r.outcome, r.detail = "n/a", err.Error()
			return r
		}
		what, err := damage(target, c.how, rand.New(rand.NewPCG(seed, 13)))
		if err != nil {
			t.Fatal(err)
		}
		r.what = filepath.Base(target) + ": " + what
	}
	r.classify(ctx, t, dir, want)
	if r.outcome == outRefused || r.outcome == outLossReported {
		// What `mqmesh node repair` makes of it.
		out := dir + ".repaired"
		rep, err := Repair(dir, out, testLogger(t))
		if err != nil {
			r.repaired = "repair failed: " + err.Error()
			return r
		}
		t.Cleanup(func() { os.RemoveAll(out) })
		// The first restart drained what it could deliver (and acked it):
		// the repaired store owes the rest.
		rest := map[string]bool{}
		for id := range want {
			if !r.delivered[id] {
				rest[id] = true
			}
		}
		after := faultResult{c: c}
		after.classify(ctx, t, out, rest)
		after.got += r.got
		after.want = len(want)
		r.repaired = fmt.Sprintf("%s (%d/%d delivered, %d dead; repair wrote %d tasks, %d dead letters)",
			after.outcome, after.got, after.want, after.dead, rep.Tasks, rep.Dead)
		if after.detail != "" {
			r.repaired += ": " + after.detail
		}
		r.repairedOutcome = after.outcome
	}
	return r
}

// classify restarts a node on dir, drains queue f and says what became of
// the tasks in want.
func (r *faultResult) classify(ctx context.Context, t *testing.T, dir string, want map[string]bool) {
	r.want = len(want)
	child, msg := tryChild(t, dir, DurabilityFsync)
	if child == nil {
		r.outcome, r.detail = outRefused, firstLine(msg)
		if panicked(msg) {
			r.outcome, r.detail = outPanic, msg
		}
		return
	}
	defer child.kill()
	got, dead, lost, corrupt, err := drainAll(ctx, child, "f")
	if err != nil {
		r.outcome, r.detail = "error", err.Error()
		if panicked(child.stderr.String()) {
			r.outcome, r.detail = outPanic, child.stderr.String()
		}
		return
	}
	r.dead, r.lost, r.corrupt, r.delivered = dead, lost, corrupt, got
	missing := 0
	for id := range want {
		if got[id] {
			r.got++
		} else {
			missing++
		}
	}
	// Tasks acked before the damage and delivered again (their acks were
	// lost with the damage) fill the record count the ledger checks, so the
	// loss it reports is net of them.
	r.redelivered = len(got) - r.got
	switch {
	case missing == 0:
		r.outcome = outAllDelivered
	case missing <= dead:
		r.outcome = outDeadLettered
	case lost > 0 && missing <= dead+lost+r.redelivered:
		r.outcome = outLossReported
	default:
		r.outcome = outSilentLoss
	}
	if panicked(child.stderr.String()) {
		r.outcome, r.detail = outPanic, child.stderr.String()
	}
}

func firstLine(s string) string {
	for _, ln := range strings.Split(s, "\n") {
		if strings.Contains(ln, "crash child:") {
			return strings.TrimSpace(ln)
		}
	}
	ln, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return ln
}

// drainAll pulls and acks queue until empty and reads its dead letters and
// damage counters.
func drainAll(ctx context.Context, fc *faultChild, queue string) (got map[string]bool, dead, lost, corrupt int, err error) {
	c, err := Dial(ctx, fc.url, nats.NoReconnect())
	if err != nil {
		return nil, 0, 0, 0, err
	}
	defer c.Close()
	got = map[string]bool{}
	for fails := 0; ; {
		ds, _, err := c.Pull(ctx, PullRequest{Queue: queue, MaxTasks: 500})
		if err != nil {
			if fails++; fails > 20 {
				return nil, 0, 0, 0, fmt.Errorf("pull keeps failing: %w", err)
			}
			continue
		}
		if len(ds) == 0 {
			break
		}
		items := make([]*AckItem, len(ds))
		for i, d := range ds {
			got[d.Task.Id] = true
			items[i] = &AckItem{Receipt: d.Receipt}
		}
		if _, err := c.Ack(ctx, items...); err != nil {
			return nil, 0, 0, 0, err
		}
	}
	for after := ""; ; {
		dts, next, err := c.DLQList(ctx, queue, after, 1000)
		if err != nil {
			return nil, 0, 0, 0, fmt.Errorf("dlq list: %w", err)
		}
		for _, d := range dts {
			if d.Reason != "" {
				dead++
			}
		}
		if next == "" {
			break
		}
		after = next
	}
	_, qs, err := c.Stats(ctx, queue)
	if err == nil && len(qs) == 1 {
		lost, corrupt = int(qs[0].LostTotal), int(qs[0].CorruptTotal)
	}
	return got, dead, lost, corrupt, nil
}

func TestFaultInjection(t *testing.T) {
	if testing.Short() {
		t.Skip("fault-injection suite skipped in -short mode")
	}
	seeds := 1
	if s := os.Getenv("MQNODE_FAULT_SEEDS"); s != "" {
		var err error
		if seeds, err = strconv.Atoi(s); err != nil || seeds < 1 {
			t.Fatalf("MQNODE_FAULT_SEEDS=%q", s)
		}
	}
	var results []faultResult
	for _, c := range faultCases {
		for seed := 1; seed <= seeds; seed++ {
			if c.file == "none" && seed > 1 {
				continue
			}
			r := runFault(t, c, uint64(seed))
			t.Logf("%-30s seed %d: %-32s %d/%d delivered, %d acked before delivered again, %d dead, %d lost reported, %d corrupt; %s %s",
				c, seed, r.outcome, r.got, r.want, r.redelivered, r.dead, r.lost, r.corrupt, r.what, truncate(r.detail, 300))
			if r.repaired != "" {
				t.Logf("%-30s seed %d: after node repair: %s", c, seed, r.repaired)
			}
			results = append(results, r)
		}
	}
	table := faultTable(results)
	t.Log("\n" + table)
	if p := os.Getenv("MQNODE_FAULT_TABLE"); p != "" {
		if err := os.WriteFile(p, []byte(table), 0o644); err != nil {
			t.Error(err)
		}
	}
	for _, r := range results {
		if r.outcome == outSilentLoss || r.outcome == outPanic || r.outcome == "error" {
			t.Errorf("%s seed %d: %s (%s): %s", r.c, r.seed, r.outcome, r.what, truncate(r.detail, 2000))
		}
		if r.repairedOutcome == outSilentLoss || r.repairedOutcome == outPanic || strings.HasPrefix(r.repaired, "repair failed") {
			t.Errorf("%s seed %d: after repair: %s", r.c, r.seed, r.repaired)
		}
		if r.c.file == "none" && r.outcome != outAllDelivered {
			t.Errorf("no damage, yet %s", r.outcome)
		}
	}
}

// faultTable counts outcomes per case as a markdown table.
func faultTable(rs []faultResult) string {
	outs := []string{outAllDelivered, outDeadLettered, outLossReported, outRefused, outSilentLoss, outPanic, "n/a"}
	var b strings.Builder
	b.WriteString("| damage | " + strings.Join(outs, " | ") + " | then `node repair` |\n|---|" + strings.Repeat("---|", len(outs)+1) + "\n")
	var order []string
	counts := map[string]map[string]int{}
	repaired := map[string]map[string]int{}
	for _, r := range rs {
		k := r.c.String()
		if counts[k] == nil {
			counts[k], repaired[k] = map[string]int{}, map[string]int{}
			order = append(order, k)
		}
		counts[k][r.outcome]++
		if r.repairedOutcome != "" {
			repaired[k][r.repairedOutcome]++
		}
	}
	for _, k := range order {
		b.WriteString("| " + k)
		for _, o := range outs {
			b.WriteString(fmt.Sprintf(" | %d", counts[k][o]))
		}
		var after []string
		for _, o := range outs {
			if n := repaired[k][o]; n > 0 {
				after = append(after, fmt.Sprintf("%d %s", n, o))
			}
		}
		b.WriteString(" | " + strings.Join(after, ", ") + " |\n")
	}
	return b.String()
}
