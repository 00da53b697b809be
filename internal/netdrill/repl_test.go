package netdrill

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// Replication of the drill: every node runs with replicas: 1 in sync mode
// (its buddy is the other host of its IDC: a1 ↔ a2, b1 ↔ b2), so every
// step runs replicated, and three steps test it (replSteps).
const (
	takeoverAfter = 10 * time.Second // buddy.takeover_after
	syncTimeout   = 2 * time.Second  // buddy.sync_timeout (policy block)
	// replBound bounds a takeover (gossip's failure detection plus
	// takeoverAfter) and a returning primary's reconciliation.
	replBound = 45 * time.Second
)

// replConfig is the node config file every node starts with (flags set the
// rest).
var replConfig = fmt.Sprintf(`replicas: 1
replication: sync
buddy:
  takeover_after: %s
  partition_policy: block
  sync_timeout: %s
`, takeoverAfter, syncTimeout)

// writeReplConfig writes replConfig into the drill's directory and returns
// its path.
func (d *drill) writeReplConfig() string {
	p := filepath.Join(d.dir, "node.yaml")
	if err := os.WriteFile(p, []byte(replConfig), 0o644); err != nil {
		d.t.Fatal(err)
	}
	return p
}

// replSteps are the replication steps, on the pair a1 (primary) and a2
// (its buddy), under the producers' load:
//
//   - buddy cut: every packet between a1 and a2 dropped; a1 must not
//     acknowledge an enqueue while it cannot reach its buddy (policy
//     block: each waits sync_timeout, then fails);
//   - takeover: 200 tasks delayed 25 s enqueued on a1 (they cannot run
//     before the kill), then a1 (node and pool) SIGKILLed; a2 takes over
//     its tasks once gossip has reported it failed for takeover_after; a1
//     restarted on its disk reconciles with a2 before it serves;
//   - lost host: the same delayed tasks, then a1 SIGKILLed, its data
//     directory deleted, kept down: a2 takes over and the tasks a1 had
//     acknowledged are completed from a2's copy.
//
// Each is checked by step's invariants: every acknowledged enqueue
// completed, duplicates counted.
func (d *drill) replSteps() {
	p, b := hosts[0], hosts[1]
	d.step("buddy cut", fmt.Sprintf("a1 ⇹ a2 (a1's buddy): every packet between them dropped for 12 s under load (iptables); partition policy block, sync_timeout %s", syncTimeout), func() {
		d.buddyCut(p, b, 12*time.Second)
	})
	d.step("takeover", "200 tasks delayed 25 s enqueued on a1, then a1 (node and pool) SIGKILLed; once a2 has taken over, a1 restarted on its disk: it reconciles with a2 before serving", func() {
		d.takeover(p, b, false)
	})
	d.step("lost host", "200 tasks delayed 25 s enqueued on a1, then a1 (node and pool) SIGKILLed, its data dir deleted, kept down: a2 takes over", func() {
		d.takeover(p, b, true)
	})
}

// buddyCut drops every packet between primary p and its buddy b for dur
// and checks that p acknowledges nothing from the time every enqueue sent
// before the cut has been answered (sync_timeout plus the producer's
// 3 s timeout) until the heal.
func (d *drill) buddyCut(p, b host, dur time.Duration) {
	partition(d.t, []host{p}, []host{b})
	settle := syncTimeout + 3*time.Second
	d.watchAlone(settle)
	before := d.ackedOn(p.name)
	d.watchAlone(dur - settle)
	during := d.ackedOn(p.name) - before
	st, _ := d.replStatus(p)
	heal(d.t, hosts)
	d.note(fmt.Sprintf("%s acknowledged %d enqueues while cut off from its buddy (want 0: policy block); its replication state then %q, %d enqueues failed for want of the buddy",
		p.name, during, st.GetState(), st.GetFailedEnqueues()))
	if during > 0 {
		d.fail(fmt.Sprintf("buddy cut: %s acknowledged %d enqueues while cut off from its buddy %s (sync, policy block)", p.name, during, b.name))
	}
}

// takeover kills primary p's host, waits until its buddy b has taken its
// tasks over, and then either restarts p on its disk and waits until it is
// replicated again (it reconciles first), or (lost) deletes p's data
// directory and keeps it down.
func (d *drill) takeover(p, b host, lost bool) {
	before := d.takeovers(b)
	// Tasks that cannot have run before the kill: when they run, they ran
	// from the buddy's copy.
	delayed := d.enqueueDelayed(p, 200, 25*time.Second)
	d.nodes[p.name].kill()
	d.workers[p.name].kill()
	killed := time.Now()
	if lost {
		if err := os.RemoveAll(filepath.Join(d.dir, p.name, "data")); err != nil {
			d.t.Fatal(err)
		}
	}
	took := d.waitRepl(b, fmt.Sprintf("%s to take over %s", b.name, p.name), func() bool { return d.takeovers(b) > before })
	if took < 0 {
		return
	}
	note := fmt.Sprintf("%d tasks delayed 25 s acknowledged by %s just before the kill; %s took over %s %.1f s after the kill (takeover_after %s)",
		delayed, p.name, b.name, p.name, time.Since(killed).Seconds(), takeoverAfter)
	if !lost {
		d.nodes[p.name].start()
		d.workers[p.name].start()
		back := time.Now()
		if d.waitRepl(p, p.name+" to reconcile and be replicated again", func() bool {
			st, err := d.replStatus(p)
			return err == nil && st.GetState() == mqnode.ReplReplicated
		}) >= 0 {
			note += fmt.Sprintf("; %s back, reconciled and replicated %.1f s after its restart", p.name, time.Since(back).Seconds())
		}
	} else {
		note += "; " + p.name + " stays down with no disk"
	}
	d.note(note)
}

// enqueueDelayed enqueues n tasks on h's node to run no earlier than delay
// from now, adds the acknowledged ones to the drill's acked (step checks
// they are completed) and returns how many were acknowledged.
func (d *drill) enqueueDelayed(h host, n int, delay time.Duration) int {
	out, err := cli(context.Background(), d.bin, d.env, "enqueue", "--server", nodeURL(h), "--queue", queue,
		"--count", strconv.Itoa(n), "--delay", delay.String(), "--ids", "--timeout", "5s")
	ids := strings.Fields(out)
	if err != nil || len(ids) != n {
		d.fail(fmt.Sprintf("%d delayed tasks on %s: %d acknowledged, err %v", n, h.name, len(ids), err))
	}
	d.mu.Lock()
	d.acked = append(d.acked, ids...)
	d.ackedBy[h.name] += len(ids)
	d.mu.Unlock()
	return len(ids)
}

// waitRepl polls cond every second (watching for nodes alone meanwhile)
// until it holds, within replBound; it returns how long that took, or -1
// (and a failure) if it never did.
func (d *drill) waitRepl(h host, what string, cond func() bool) time.Duration {
	start := time.Now()
	for time.Since(start) < replBound {
		if cond() {
			return time.Since(start)
		}
		d.watchAlone(time.Second)
	}
	st, err := d.replStatus(h)
	d.fail(fmt.Sprintf("waited %s for %s: replication of %s is %v (err %v)", replBound, what, h.name, st, err))
	return -1
}

// takeovers is how many takeovers buddy b has completed since it started,
// as its stats say (0 when b does not answer).
func (d *drill) takeovers(b host) uint64 {
	st, err := d.replStatus(b)
	if err != nil {
		return 0
	}
	return st.GetTakeovers()
}

// replStatus asks h's node for its replication state.
func (d *drill) replStatus(h host) (*wirepb.ReplStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var opts []nats.Option
	if dir := d.secDir; dir != "" {
		set, err := secrets.Load(dir)
		if err != nil {
			return nil, err
		}
		if opts, err = set.ClientOptions(secrets.RoleAdmin); err != nil {
			return nil, err
		}
	}
	c, err := mqnode.Dial(ctx, nodeURL(h), opts...)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	rep, err := c.StatsReply(ctx, queue)
	if err != nil {
		return nil, err
	}
	return rep.GetReplication(), nil
}
