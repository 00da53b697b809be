package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// GridRun is one run of a peer's tuning grid: --tune-count tasks enqueued
// and drained with one drive, on a server shared by the peer's grid.
type GridRun struct {
	Peer       string `json:"peer"`
	Durability string `json:"durability"`
	// Stage is what the run varies: enqueue (the producing style, with the
	// baseline's consumers), drain-1 (the pulling style and batch with one
	// consumer) or drain-2 (consumers and ack style).
	Stage       string  `json:"stage"`
	Drive       Drive   `json:"drive"`
	Count       int     `json:"count"`
	EnqueuePerS float64 `json:"enqueue_per_s"`
	DrainPerS   float64 `json:"drain_per_s"`
	OK          bool    `json:"ok"`
	Error       string  `json:"error,omitempty"`
}

// Stages of a tuning grid.
const (
	stageEnqueue = "enqueue"
	stageDrain1  = "drain-1"
	stageDrain2  = "drain-2"
)

// tunePeer runs peerName's grid (drive.go) at durability pair on one
// server: first the enqueue styles, then, with the fastest of them, the
// draining styles in two stages. It returns every run and the best drive:
// the fastest enqueue style with the fastest draining style of either
// drain stage.
func tunePeer(ctx context.Context, o *nodeOptions, w *workload, root, peerName, pair string) (runs []GridRun, best Drive, err error) {
	dir, err := os.MkdirTemp(root, "tune-"+peerName+"-"+pair+"-")
	if err != nil {
		return nil, Drive{}, err
	}
	defer os.RemoveAll(dir)
	label := "tune " + peerName + " " + durabilityName(peerName, pair)
	fmt.Fprintf(w.log, "bench: %s: starting server\n", label)
	c, err := startChild(ctx, o.launch, serveOptions{peer: peerName, durability: pair, dir: dir}, w.log)
	if err != nil {
		return nil, Drive{}, err
	}
	defer func() { err = errors.Join(err, c.stop()) }()

	// do runs ds and returns the fastest run (by enqueue/s in the enqueue
	// stage, else by drain/s), or top when none beats it.
	do := func(stage string, ds []Drive, top GridRun) GridRun {
		for _, d := range ds {
			if ctx.Err() != nil {
				break
			}
			g := gridRun(ctx, o, w.with(d, strconv.Itoa(len(runs)+1)), c.url, peerName, pair, stage, label)
			runs = append(runs, g)
			score, topScore := g.DrainPerS, top.DrainPerS
			if stage == stageEnqueue {
				score, topScore = g.EnqueuePerS, top.EnqueuePerS
			}
			if g.OK && score > topScore {
				top = g
			}
		}
		return top
	}
	top := do(stageEnqueue, enqueueGrid(peerName, baseline(peerName, o)), GridRun{})
	if !top.OK {
		return runs, Drive{}, fmt.Errorf("%s: no enqueue style succeeded", label)
	}
	best = top.Drive
	top = GridRun{}
	for stage, name := range []string{stageDrain1, stageDrain2} {
		if ds := drainGrid(peerName, stage+1, best); len(ds) > 0 {
			top = do(name, ds, top)
		}
		if !top.OK {
			return runs, Drive{}, fmt.Errorf("%s: no %s style succeeded", label, name)
		}
		best = top.Drive
	}
	fmt.Fprintf(w.log, "bench: %s: best drive %s\n", label, best)
	return runs, best, context.Cause(ctx)
}

// gridRun runs one drive of a grid against the server at url.
func gridRun(ctx context.Context, o *nodeOptions, w *workload, url, peerName, pair, stage, label string) GridRun {
	count := o.tuneCount
	if pair == durFsync {
		count = o.tuneCountFsync
	}
	g := GridRun{Peer: peerName, Durability: durabilityName(peerName, pair), Stage: stage, Drive: w.drive, Count: count}
	label = fmt.Sprintf("%s run %s [%s]", label, w.run, w.drive)
	var res Result
	err := func() error {
		p, err := connect(ctx, peerName, url, w)
		if err != nil {
			return err
		}
		defer p.close()
		if err := p.prepare(ctx); err != nil {
			return err
		}
		return runPhases(ctx, p, w, count, label, &res, nil)
	}()
	g.EnqueuePerS, g.DrainPerS = res.EnqueuePerS, res.DrainPerS
	if err != nil {
		g.Error = err.Error()
		fmt.Fprintf(w.log, "bench: %s: %v\n", label, err)
	}
	g.OK = err == nil && res.Delivered == int64(count)
	return g
}
