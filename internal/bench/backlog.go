package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// runBacklog grows a backlog on peerName to each size in o.backlogSteps
// without consuming and records the server's memory and disk use after
// each step. For mqnode with o.backlogDrain, it first times draining that
// many tasks (at most the first step) from a node holding nothing else, and
// at the end draining as many from the head of the full backlog.
func runBacklog(ctx context.Context, o *nodeOptions, w *workload, root, peerName string) Backlog {
	bl := Backlog{Peer: peerName, Durability: durabilityName(peerName, o.backlogDurability), Steps: []BacklogStep{}}
	if err := growBacklog(ctx, o, w, root, &bl); err != nil {
		bl.Error = err.Error()
		fmt.Fprintf(w.log, "bench: backlog %s: %v\n", peerName, err)
	}
	return bl
}

func growBacklog(ctx context.Context, o *nodeOptions, w *workload, root string, bl *Backlog) (err error) {
	dir, err := os.MkdirTemp(root, "backlog-"+bl.Peer+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(w.log, "bench: backlog: starting %s %s\n", bl.Peer, bl.Durability)
	so := serveOptions{peer: bl.Peer, durability: o.backlogDurability, dir: dir}
	if bl.Peer == peerMQNode {
		so.pageout = o.backlogPageOut
	}
	if o.profileDir != "" {
		base := filepath.Join(o.profileDir, "backlog-"+bl.Peer+"-"+bl.Durability)
		so.cpuProfile, so.memProfile = base+".cpu.pprof", base+".heap.pprof"
	}
	c, err := startChild(ctx, o.launch, so, w.log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.stop()) }()
	p, err := connect(ctx, bl.Peer, c.url, w)
	if err != nil {
		return err
	}
	defer p.close()
	if err := p.prepare(ctx); err != nil {
		return err
	}
	// The drains (mqnode only): as many tasks as --backlog-drain, at most
	// the first step.
	drainN := 0
	if bl.Peer == peerMQNode && len(o.backlogSteps) > 0 {
		drainN = min(o.backlogDrain, o.backlogSteps[0])
	}
	if drainN > 0 {
		if bl.EmptyDrainPerS, err = drainFromEmpty(ctx, drainN, w, bl.Peer, c.url); err != nil {
			return fmt.Errorf("drain from an empty node: %w", err)
		}
		bl.DrainTasks = drainN
		fmt.Fprintf(w.log, "bench: %s drain of %d tasks from an empty node: %.0f tasks/s\n", bl.Peer, drainN, bl.EmptyDrainPerS)
	}
	var from uint64
	for _, step := range o.backlogSteps {
		to := uint64(step)
		label := fmt.Sprintf("%s backlog to %d:", bl.Peer, step)
		smp := startSampler(c.pid, 100*time.Millisecond)
		t0 := time.Now()
		err := enqueueAll(ctx, p, w, from, to, label)
		s := BacklogStep{Added: int64(to - from), EnqueueS: time.Since(t0).Seconds()}
		peak := smp.finish()
		if err != nil {
			return err
		}
		s.EnqueuePerS = float64(s.Added) / s.EnqueueS
		if s.Backlog, err = p.stored(ctx); err != nil {
			return err
		}
		if s.Backlog != int64(to) {
			return fmt.Errorf("backlog %d after step %d: tasks missing", s.Backlog, step)
		}
		m, err := readMemory(c.pid)
		if err != nil && procAvailable() {
			return err
		}
		s.RSSMiB, s.AnonMiB, s.FileMiB = mib(m.rss), mib(m.anon), mib(m.file)
		s.HWMMiB, s.PeakRSSMiB = mib(m.hwm), mib(peak.rss)
		if du, err := diskUsage(dir); err == nil {
			s.DiskMiB = mib(du)
			s.DiskBytesPerTask = float64(du) / float64(max(s.Backlog, 1))
		}
		fmt.Fprintf(w.log, "bench: %s backlog %d tasks: RSS %.1f MiB (anon %.1f, file %.1f; peak in step %.1f), disk %.1f MiB, %.0f tasks/s\n",
			bl.Peer, s.Backlog, s.RSSMiB, s.AnonMiB, s.FileMiB, s.PeakRSSMiB, s.DiskMiB, s.EnqueuePerS)
		bl.Steps = append(bl.Steps, s)
		from = to
	}
	if drainN > 0 {
		n := uint64(drainN)
		t0 := time.Now()
		if err := drainAll(ctx, p, w, newTracker(n), fmt.Sprintf("%s backlog of %d:", bl.Peer, from)); err != nil {
			return fmt.Errorf("drain from the backlog: %w", err)
		}
		bl.DeepDrainPerS = float64(n) / time.Since(t0).Seconds()
		bl.DrainRatio = ratio(bl.DeepDrainPerS, bl.EmptyDrainPerS)
		fmt.Fprintf(w.log, "bench: %s drain of %d tasks from the head of a backlog of %d: %.0f tasks/s (%.2f× the empty node's)\n",
			bl.Peer, n, from, bl.DeepDrainPerS, bl.DrainRatio)
	}
	return nil
}

// drainFromEmpty enqueues count tasks to a queue of their own on
// a node that holds nothing else yet and times draining them: the drain
// rate a deep backlog is compared with.
func drainFromEmpty(ctx context.Context, count int, w *workload, peerName, url string) (float64, error) {
	we := *w
	we.run = "empty"
	p, err := connect(ctx, peerName, url, &we)
	if err != nil {
		return 0, err
	}
	defer p.close()
	if err := p.prepare(ctx); err != nil {
		return 0, err
	}
	n := uint64(count)
	if err := enqueueAll(ctx, p, &we, 0, n, peerName+" empty node:"); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := drainAll(ctx, p, &we, newTracker(n), peerName+" empty node:"); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// diskUsage sums the disk space taken by the files under dir.
func diskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if info, err := d.Info(); err == nil { // else removed meanwhile
			n += allocated(info)
		}
		return nil
	})
	return n, err
}
