package sim

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
	"github.com/mqmesh/mqmesh/worker"
)

// A bad deploy and its repair by replay.
//
// bad-deploy makes the handlers (of one IDC, or every IDC when idc is
// empty) ack their tasks without doing the work — a handler bug that
// reports success. The simulation does not count such a task as completed,
// so until it is repaired it shows up as lost. replay deploys the fix (the
// handlers work again) and replays, on every node that is up, the tasks
// settled since the first bad-deploy (mqmesh replay --mesh): the queue
// keeps settled tasks for an hour in any scenario with a replay event. A
// replayed task is a new task carrying mqmesh-replay-root, and its
// completion counts for the original, so a repaired run reports nothing
// lost. The report's deploy line says how many tasks were acked without
// work, how many were replayed, and how many of those were repaired.

// keepSettled is the sim queue's keep_settled: an hour when the timeline
// replays, else off.
func (s Scenario) keepSettled() time.Duration {
	for _, ev := range s.Timeline {
		if ev.Action == "replay" {
			return time.Hour
		}
	}
	return 0
}

// deploys tracks bad deploys and replays of one run.
type deploys struct {
	mu       sync.Mutex
	bad      map[string]bool // IDC → handlers ack without working ("" = every IDC)
	since    time.Time       // start of the first bad deploy not yet replayed
	badAcked map[string]bool // task ids acked without work
	rep      DeployReport
}

// DeployReport is what bad deploys and replays did in one mode.
type DeployReport struct {
	// BadAcked counts the tasks acked by a bad deploy without the work.
	BadAcked int `json:"bad_acked"`
	// Replayed counts tasks the replays re-enqueued; Repaired those of the
	// badly acked tasks that a replayed copy then completed.
	Replayed int `json:"replayed"`
	Repaired int `json:"repaired"`
	// ReplayErrors counts nodes a replay failed on.
	ReplayErrors int `json:"replay_errors"`
}

func newDeploys() *deploys { return &deploys{bad: map[string]bool{}, badAcked: map[string]bool{}} }

func (d *deploys) badDeploy(idc string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.bad[idc] = true
	if d.since.IsZero() {
		d.since = now
	}
}

// fix ends every bad deploy and returns when the first began (zero: none).
func (d *deploys) fix() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.bad)
	since := d.since
	d.since = time.Time{}
	return since
}

// ackBadly reports whether the handler of idc is bad now; if so it records
// the task as acked without work.
func (d *deploys) ackBadly(idc string, t *worker.Task) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.bad[idc] && !d.bad[""] {
		return false
	}
	d.badAcked[completionID(t)] = true
	return true
}

// completionID is the task a completion counts for: a replayed task's
// original.
func completionID(t *worker.Task) string {
	if root := t.Headers[mqnode.HeaderReplayRoot]; root != "" {
		return root
	}
	return t.ID
}

// replayAll deploys the fix and replays, on every node that is up, the
// tasks settled since the bad deploy began (the nodes share the clock).
// A task acked badly just before the fix may settle only after a first
// pass has read its node, so the replay runs again with the same replay id
// (which adds only what is missing) every 500 ms until a pass at least a
// second after the fix finds nothing new, or for at most 10 s.
func (r *run) replayAll(ctx context.Context, id string) error {
	since := r.deploy.fix()
	if since.IsZero() {
		return nil
	}
	fixed := time.Now()
	for {
		n, err := r.replayPass(ctx, id, since)
		if err != nil || ctx.Err() != nil || (n == 0 && time.Since(fixed) > time.Second) || time.Since(fixed) > 10*time.Second {
			return err
		}
		sleepUntil(ctx, time.Now().Add(500*time.Millisecond))
	}
}

// replayPass replays on every node once; it returns how many it added.
func (r *run) replayPass(ctx context.Context, id string, since time.Time) (int, error) {
	var errs, total int
	for _, h := range r.hosts {
		h.mu.Lock()
		c := h.client
		h.mu.Unlock()
		if c == nil || h.workerOnly {
			continue
		}
		n, err := replayNode(ctx, c, id, since)
		total += n
		r.deploy.mu.Lock()
		r.deploy.rep.Replayed += n
		r.deploy.mu.Unlock()
		if err != nil {
			errs++
			r.log.Warn("replay failed", "host", h.name, "err", err)
		}
	}
	r.deploy.mu.Lock()
	r.deploy.rep.ReplayErrors += errs
	r.deploy.mu.Unlock()
	if errs > 0 {
		return total, fmt.Errorf("replay failed on %d node(s)", errs)
	}
	return total, nil
}

func replayNode(ctx context.Context, c *mqnode.Client, id string, since time.Time) (int, error) {
	req := &wirepb.ReplayRequest{Queue: Queue, ReplayId: id, SinceUnixMs: since.UnixMilli()}
	n := 0
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rep, err := c.Replay(rctx, req)
		cancel()
		if err != nil {
			return n, err
		}
		n += int(rep.Enqueued)
		if len(rep.Next) == 0 {
			return n, nil
		}
		req.After = rep.Next
	}
}

// report fills the deploy report, counting the repaired tasks.
func (d *deploys) report(completions map[string]int) *DeployReport {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.badAcked) == 0 && d.rep == (DeployReport{}) {
		return nil
	}
	rep := d.rep
	rep.BadAcked = len(d.badAcked)
	for id := range d.badAcked {
		if completions[id] > 0 {
			rep.Repaired++
		}
	}
	return &rep
}

// writeDeploy prints the deploy line of a mode, if it had bad deploys.
func writeDeploy(w io.Writer, mode string, d *DeployReport) {
	if d == nil {
		return
	}
	fmt.Fprintf(w, "%s: bad deploy acked %d tasks without the work; replay re-enqueued %d, repairing %d of them",
		mode, d.BadAcked, d.Replayed, d.Repaired)
	if d.ReplayErrors > 0 {
		fmt.Fprintf(w, " (replay failed on %d node(s))", d.ReplayErrors)
	}
	fmt.Fprintln(w)
}
