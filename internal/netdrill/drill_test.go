package netdrill

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds the drill asserts (and the README states).
const (
	convergeBound = 45 * time.Second // every view = the true membership
	doneBound     = 90 * time.Second // every acked enqueue completed
	queue         = "drill"
)

var hosts = []host{
	{name: "a1", idc: "idc-a", ip: subnet + ".11"},
	{name: "a2", idc: "idc-a", ip: subnet + ".12"},
	{name: "b1", idc: "idc-b", ip: subnet + ".21"},
	{name: "b2", idc: "idc-b", ip: subnet + ".22"},
}

// drill is the running mesh and what the invariants need.
type drill struct {
	t       *testing.T
	bin     string
	env     []string
	dir     string
	nodes   map[string]*proc
	workers map[string]*proc

	mu       sync.Mutex
	frozen   map[string]bool
	acked    []string       // every acknowledged enqueue's id
	ackedBy  map[string]int // acknowledged enqueues per host
	secDir   string         // the secrets directory ("" without)
	notes    []string       // what the current step noted (note)
	enqErrs  map[string]int // failed enqueue calls per host
	alone    []string       // a node in a mesh of its own for 3 polls in a row
	blips    []string       // ... for a single poll (reported, not a failure)
	streak   map[string]int // consecutive polls a node was alone
	seenDown int            // most nodes one view listed as not alive during the step
	rows     []row
	failures []string
}

// row is one line of the step × invariant table.
type row struct {
	step, fault      string
	converge         time.Duration
	converged        bool
	acked, missing   int
	doneIn           time.Duration
	completions, dup int
	alone            int
	seenDown         int // during the fault: most nodes a view listed failed or left
	notes            string
}

func nodeURL(h host) string { return "nats://" + h.ip + ":4222" }
func nodeID(h host) string  { return "node:" + h.idc + ":" + h.name }
func poolID(h host) string  { return "worker:" + h.idc + ":w-" + h.name }

func TestDrill(t *testing.T) {
	needNetns(t)
	lockDrill(t)
	start := time.Now()
	dir, err := os.MkdirTemp("", prefix+"-drill-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("NETDRILL_KEEP") == "" {
			os.RemoveAll(dir)
		}
	})
	d := &drill{t: t, dir: dir, nodes: map[string]*proc{}, workers: map[string]*proc{}, frozen: map[string]bool{}, ackedBy: map[string]int{}, enqErrs: map[string]int{}, streak: map[string]int{}}
	d.bin = buildBinary(t, dir)
	d.env = d.secrets()
	setup(t, hosts)
	d.mountSmallDisk(hosts[2])
	d.startAll()

	ctx, stopLoad := context.WithCancel(context.Background())
	var load sync.WaitGroup
	for _, h := range hosts {
		load.Add(1)
		go func(h host) { defer load.Done(); d.produce(ctx, h) }(h)
	}
	t.Cleanup(func() { stopLoad(); load.Wait() })

	d.step("baseline", "none: 4 nodes and 4 pools, load on every node", func() { time.Sleep(5 * time.Second) })
	d.step("kill -9", "host a1 (node and pool) SIGKILLed, restarted as first started (no seed) 6 s later", func() {
		d.nodes["a1"].kill()
		d.workers["a1"].kill()
		d.watchAlone(6 * time.Second)
		d.nodes["a1"].start()
		d.workers["a1"].start()
	})
	d.step("freeze", "host b2 (node and pool) SIGSTOPped for 10 s, then SIGCONT", func() {
		d.setFrozen("b2", true)
		d.nodes["b2"].signal(syscall.SIGSTOP)
		d.workers["b2"].signal(syscall.SIGSTOP)
		d.watchAlone(10 * time.Second)
		d.nodes["b2"].signal(syscall.SIGCONT)
		d.workers["b2"].signal(syscall.SIGCONT)
		d.setFrozen("b2", false)
	})
	d.step("partition", "idc-a ⇹ idc-b: every packet between the IDCs dropped for 15 s (iptables), then healed", func() {
		partition(t, hosts[:2], hosts[2:])
		d.watchAlone(15 * time.Second)
		heal(t, hosts)
	})
	var slow string
	d.step("slow link", "a2's link slow for 15 s, then healed", func() {
		slow = slowLink(t, hosts[1])
		d.watchAlone(15 * time.Second)
		heal(t, hosts)
	})
	d.rows[len(d.rows)-1].fault = "a2's link: " + slow + " for 15 s, then healed"
	d.step("full disk", "b1's data dir (96 MiB tmpfs) filled for 8 s under load, then freed", func() {
		d.fillDisk(hosts[2], 8*time.Second)
	})
	d.replSteps()
	stopLoad()
	load.Wait()
	d.step("end", "load stopped; everything acknowledged must be completed", func() {})

	table := d.table()
	t.Logf("drill finished in %s\n%s", time.Since(start).Round(time.Second), table)
	if p := os.Getenv("NETDRILL_TABLE"); p != "" {
		_ = os.WriteFile(p, []byte(table), 0o644)
	}
	for _, f := range d.failures {
		t.Error(f)
	}
}

// lockDrill serializes drills on one machine: the namespaces, links and
// addresses are fixed names.
func lockDrill(t *testing.T) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "mqmesh-netdrill.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}

// secrets makes a secrets directory when this mqmesh has `secrets init`
// (nodes on non-loopback addresses then require it) and returns the
// environment that hands it to every command; nothing otherwise.
func (d *drill) secrets() []string {
	dir := filepath.Join(d.dir, "secrets")
	out, err := exec.Command(d.bin, "secrets", "init", dir).CombinedOutput()
	if err != nil {
		d.t.Logf("netdrill: no `mqmesh secrets init` (%v: %s): running without secrets", err, strings.TrimSpace(string(out)))
		return nil
	}
	d.t.Logf("netdrill: secrets in %s ($MQMESH_SECRETS)", dir)
	d.secDir = dir
	return []string{"MQMESH_SECRETS=" + dir}
}

// mountSmallDisk puts h's data dir on a 96 MiB tmpfs (for the full disk).
func (d *drill) mountSmallDisk(h host) {
	data := filepath.Join(d.dir, h.name, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		d.t.Fatal(err)
	}
	run(d.t, "mount", "-t", "tmpfs", "-o", "size=96m", prefix+"-drill-"+h.name, data)
	d.t.Cleanup(func() { try("umount", "-l", data) })
}

// startAll starts the nodes one after the other (the first with no seed,
// each other naming one), then a pool on every host.
func (d *drill) startAll() {
	seeds := map[string]string{"a1": "", "a2": hosts[0].ip, "b1": hosts[0].ip, "b2": hosts[2].ip}
	wcfg := filepath.Join(d.dir, "worker.yaml")
	if err := os.WriteFile(wcfg, []byte("queues:\n  "+queue+": {kind: sleep, latency: 2ms}\n"), 0o644); err != nil {
		d.t.Fatal(err)
	}
	ncfg := d.writeReplConfig()
	for _, h := range hosts {
		hd := filepath.Join(d.dir, h.name)
		if err := os.MkdirAll(hd, 0o755); err != nil {
			d.t.Fatal(err)
		}
		args := []string{d.bin, "node", "--config", ncfg, "--name", h.name, "--idc", h.idc, "--host", "host-" + h.name,
			"--data", filepath.Join(hd, "data"), "--listen", h.ip + ":4222", "--gossip-bind", h.ip,
			"--cluster-listen", h.ip + ":6222", "--gateway-listen", h.ip + ":7222", "--profile", "lan",
			"--disk-reserve", "16777216", "--memtable-size", "4194304", "--nats-max-payload", "262144", "--max-payload", "65536", "--value-log-file-size", "4194304", "--json", "--shutdown-timeout", "10s"}
		if s := seeds[h.name]; s != "" {
			args = append(args, "--seed", s+":7946")
		}
		n := &proc{t: d.t, h: h, kind: "node", args: args, env: d.env, dir: hd}
		d.nodes[h.name] = n
		n.start()
		d.t.Cleanup(n.stop)
	}
	for _, h := range hosts {
		hd := filepath.Join(d.dir, h.name)
		args := []string{d.bin, "worker", "--config", wcfg, "--server", nodeURL(h), "--id", "w-" + h.name,
			"--seed", h.ip + ":7946", "--gossip-bind", h.ip, "--gossip-port", "7947", "--profile", "lan",
			"--slots", "8", "--report", "0", "--completions", filepath.Join(hd, "completions.log"), "--shutdown-timeout", "5s"}
		w := &proc{t: d.t, h: h, kind: "worker", args: args, env: d.env, dir: hd}
		d.workers[h.name] = w
		w.start()
		d.t.Cleanup(w.stop)
	}
}

func (d *drill) setFrozen(name string, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.frozen[name] = on
}

// up reports whether h's node runs and is not frozen.
func (d *drill) up(h host) bool {
	d.mu.Lock()
	frozen := d.frozen[h.name]
	d.mu.Unlock()
	return !frozen && d.nodes[h.name].running()
}

// produce enqueues 20 tasks a second on h's node while it is up, and
// records the ids the node acknowledged.
func (d *drill) produce(ctx context.Context, h host) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !d.up(h) {
			continue
		}
		out, err := cli(ctx, d.bin, d.env, "enqueue", "--server", nodeURL(h), "--queue", queue, "--count", "20", "--ids", "--timeout", "3s")
		ids := strings.Fields(out) // printed even when a later batch failed: those were acknowledged
		d.mu.Lock()
		d.acked = append(d.acked, ids...)
		d.ackedBy[h.name] += len(ids)
		if err != nil && ctx.Err() == nil {
			d.enqErrs[h.name]++
		}
		d.mu.Unlock()
	}
}

// views asks every up node for its membership.
func (d *drill) views() map[string]membersView {
	out := map[string]membersView{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, h := range hosts {
		if !d.up(h) {
			continue
		}
		wg.Add(1)
		go func(h host) {
			defer wg.Done()
			s, err := cli(context.Background(), d.bin, d.env, "mesh", "members", "--server", nodeURL(h), "--json", "--timeout", "2s")
			if err != nil {
				return
			}
			if v, err := parseMembers(s); err == nil {
				mu.Lock()
				out[h.name] = v
				mu.Unlock()
			}
		}(h)
	}
	wg.Wait()
	return out
}

// truth is the membership as it is: every running, unfrozen node and pool.
func (d *drill) truth() []string {
	var ids []string
	for _, h := range hosts {
		if d.up(h) {
			ids = append(ids, nodeID(h))
			if d.workers[h.name].running() {
				ids = append(ids, poolID(h))
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// noteAlone records every node that sees no other alive node, or says it
// is cut off from its mesh, and how many nodes a view lists as not alive
// (the fault as gossip saw it).
func (d *drill) noteAlone(vs map[string]membersView) {
	for name, v := range vs {
		down := 0
		for _, m := range v.Members {
			if m.Role == "node" && m.State != "alive" {
				down++
			}
		}
		d.mu.Lock()
		d.seenDown = max(d.seenDown, down)
		d.mu.Unlock()
		others := 0
		for _, id := range v.alive() {
			if strings.HasPrefix(id, "node:") && id != v.Self {
				others++
			}
		}
		d.mu.Lock()
		if others == 0 || !v.Ready {
			d.streak[name]++
			what := fmt.Sprintf("%s at %s (alive %v, not ready: %q)", name, time.Now().Format("15:04:05.0"), v.alive(), v.NotReady)
			if d.streak[name] == 3 {
				d.alone = append(d.alone, what)
			} else if d.streak[name] == 1 {
				d.blips = append(d.blips, what)
			}
		} else {
			d.streak[name] = 0
		}
		d.mu.Unlock()
	}
}

// watchAlone waits d, looking for nodes alone every second.
func (d *drill) watchAlone(dur time.Duration) {
	for end := time.Now().Add(dur); time.Now().Before(end); {
		next := time.Now().Add(time.Second)
		d.noteAlone(d.views())
		time.Sleep(time.Until(next))
	}
}

// converge waits until every up node lists exactly the true membership.
func (d *drill) converge() (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < convergeBound {
		vs := d.views()
		d.noteAlone(vs)
		want := d.truth()
		ok := len(vs) > 0
		for _, h := range hosts {
			if !d.up(h) {
				continue
			}
			v, answered := vs[h.name]
			got := v.alive()
			slices.Sort(got)
			if !answered || !slices.Equal(got, want) {
				ok = false
			}
		}
		if ok {
			return time.Since(start), true
		}
		time.Sleep(500 * time.Millisecond)
	}
	return time.Since(start), false
}

// completions reads every pool's completion log: how often each id was
// completed.
func (d *drill) completions() map[string]int {
	seen := map[string]int{}
	for _, h := range hosts {
		b, err := os.ReadFile(filepath.Join(d.dir, h.name, "completions.log"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			d.t.Fatal(err)
		}
		for _, id := range strings.Fields(string(b)) {
			seen[id]++
		}
	}
	return seen
}

// step runs a fault, then checks every invariant and adds a table row.
func (d *drill) step(name, fault string, do func()) {
	d.t.Logf("netdrill: step %s: %s", name, fault)
	d.mu.Lock()
	aloneBefore, blipsBefore := len(d.alone), len(d.blips)
	errsBefore := maps.Clone(d.enqErrs)
	d.seenDown = 0
	d.notes = nil
	d.mu.Unlock()
	do()
	d.mu.Lock()
	seen := d.seenDown
	d.mu.Unlock()
	r := row{step: name, fault: fault, seenDown: seen}
	r.converge, r.converged = d.converge()
	if !r.converged {
		d.failures = append(d.failures, fmt.Sprintf("%s: views did not converge to the true membership within %s: %v", name, convergeBound, d.views()))
	}
	d.mu.Lock()
	acked := slices.Clone(d.acked)
	d.mu.Unlock()
	r.acked = len(acked)
	start := time.Now()
	for {
		seen := d.completions()
		missing := 0
		for _, id := range acked {
			if seen[id] == 0 {
				missing++
			}
		}
		r.missing, r.doneIn = missing, time.Since(start)
		r.completions, r.dup = 0, 0
		for _, n := range seen {
			r.completions += n
			r.dup += n - 1
		}
		if missing == 0 || time.Since(start) > doneBound {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if r.missing > 0 {
		d.failures = append(d.failures, fmt.Sprintf("%s: %d of %d acknowledged enqueues not completed within %s", name, r.missing, r.acked, doneBound))
	}
	// Duplicates come from leases handed over while a pool was cut off
	// or frozen: bounded by the tasks in flight then, far below 5 %.
	if r.dup > r.acked/20+50 {
		d.failures = append(d.failures, fmt.Sprintf("%s: %d duplicate completions for %d acknowledged enqueues (bound 5%% + 50)", name, r.dup, r.acked))
	}
	d.mu.Lock()
	r.alone = len(d.alone) - aloneBefore
	for _, n := range d.notes {
		r.notes += n + "; "
	}
	if b := d.blips[blipsBefore:]; len(b) > 0 {
		r.notes += fmt.Sprintf("seen alone for one poll (not a failure: under 3 in a row): %v; ", b)
	}
	if r.alone > 0 {
		d.failures = append(d.failures, fmt.Sprintf("%s: a node was in a mesh of its own: %v", name, d.alone[aloneBefore:]))
	}
	var errs []string
	for _, h := range hosts {
		if n := d.enqErrs[h.name] - errsBefore[h.name]; n > 0 {
			errs = append(errs, fmt.Sprintf("%s %d", h.name, n))
		}
	}
	d.mu.Unlock()
	if len(errs) > 0 {
		r.notes += "enqueue calls refused or failed (not acknowledged, so not counted): " + strings.Join(errs, ", ")
	}
	d.rows = append(d.rows, r)
	d.t.Logf("netdrill: %s: views %s (%v), acked %d missing %d (%s), completions %d dup %d, alone %d; %s",
		name, r.converge.Round(100*time.Millisecond), r.converged, r.acked, r.missing, r.doneIn.Round(100*time.Millisecond), r.completions, r.dup, r.alone, r.notes)
}

// ackedOn is how many enqueues h's node has acknowledged so far.
func (d *drill) ackedOn(h string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ackedBy[h]
}

// note adds a remark to the current step's row.
func (d *drill) note(s string) {
	d.t.Logf("netdrill: %s", s)
	d.mu.Lock()
	d.notes = append(d.notes, s)
	d.mu.Unlock()
}

// fail records a failed invariant (reported at the end, with the table).
func (d *drill) fail(s string) {
	d.t.Logf("netdrill: FAIL: %s", s)
	d.failures = append(d.failures, s)
}

// fillDisk fills h's tmpfs data dir for dur while the load goes on, frees
// it, and restarts the node as first started if it died.
func (d *drill) fillDisk(h host, dur time.Duration) {
	filler := filepath.Join(d.dir, h.name, "data", prefix+"-filler")
	f, err := os.Create(filler)
	if err != nil {
		d.t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			break // ENOSPC: full
		}
	}
	f.Close()
	d.watchAlone(dur)
	if err := os.Remove(filler); err != nil {
		d.t.Fatal(err)
	}
	n := d.nodes[h.name]
	if !n.running() {
		d.t.Logf("netdrill: node %s died on the full disk; restarting it as first started", h.name)
		n.start()
	}
}

// table renders the step × invariant table (Markdown).
func (d *drill) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| step | fault | seen by gossip | views = truth after (bound %s) | acked → done (bound %s) | duplicates | alone |\n", convergeBound, doneBound)
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range d.rows {
		views := fmt.Sprintf("ok in %.1f s", r.converge.Seconds())
		if !r.converged {
			views = "NO"
		}
		done := fmt.Sprintf("%d / %d in %.1f s", r.acked-r.missing, r.acked, r.doneIn.Seconds())
		if r.missing > 0 {
			done = fmt.Sprintf("MISSING %d of %d", r.missing, r.acked)
		}
		alone := "never"
		if r.alone > 0 {
			alone = fmt.Sprintf("%d times (3 polls in a row)", r.alone)
		}
		seen := "-"
		if r.seenDown > 0 {
			seen = fmt.Sprintf("%d node(s) down", r.seenDown)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d of %d completions | %s |\n", r.step, r.fault, seen, views, done, r.dup, r.completions, alone)
	}
	var notes []string
	for _, r := range d.rows {
		if r.notes != "" {
			notes = append(notes, r.step+": "+r.notes)
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n" + strings.Join(notes, "\n") + "\n")
	}
	return b.String()
}
