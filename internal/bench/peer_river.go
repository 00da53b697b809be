package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// riverPeer drives River (github.com/riverqueue/river), a Go job queue on
// PostgreSQL, as a user of it would: jobs inserted with InsertMany (or
// InsertManyFast, COPY FROM) and worked by a River client whose queue runs
// Drive.Consumers workers. The PostgreSQL server runs in the child (see
// postgres.go); the River clients run here.
type riverPeer struct {
	pool   *pgxpool.Pool
	insert *river.Client[pgx.Tx]
	w      *workload
	queue  string
}

// riverArgs is a bench job: the task index and the rest of the payload.
type riverArgs struct {
	I uint64 `json:"i"`
	P []byte `json:"p"`
}

func (riverArgs) Kind() string { return "bench" }

func dialRiver(ctx context.Context, url string, w *workload) (*riverPeer, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	// Room for every producer and River's own connections.
	cfg.MaxConns = int32(max(w.producers, 4) + 16)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// River's queue names allow letters, digits, _ and -.
	p := &riverPeer{pool: pool, w: w, queue: "bench_" + w.run}
	if w.run == "" {
		p.queue = "bench"
	}
	p.insert, err = river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: quietLogger()})
	if err != nil {
		pool.Close()
		return nil, err
	}
	return p, nil
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (p *riverPeer) close() { p.pool.Close() }

// prepare runs River's schema migrations (a no-op once done).
func (p *riverPeer) prepare(ctx context.Context) error {
	m, err := rivermigrate.New(riverpgxv5.New(p.pool), &rivermigrate.Config{Logger: quietLogger()})
	if err != nil {
		return err
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrate: %w", err)
	}
	return nil
}

// enqueue inserts EnqueueBatch jobs per call; each call commits before it
// returns.
func (p *riverPeer) enqueue(ctx context.Context, w *workload, from, to uint64, progress *atomic.Int64) error {
	opts := &river.InsertOpts{Queue: p.queue}
	return produce(ctx, w, from, to, func(ctx context.Context, lo, hi uint64) error {
		params := make([]river.InsertManyParams, 0, hi-lo)
		for i := lo; i < hi; i++ {
			params = append(params, river.InsertManyParams{Args: riverArgs{I: i, P: w.filler[8:]}, InsertOpts: opts})
		}
		var err error
		if w.drive.Enqueue == enqueueRiverFast {
			_, err = p.insert.InsertManyFast(ctx, params)
		} else {
			_, err = p.insert.InsertMany(ctx, params)
		}
		if err != nil {
			return fmt.Errorf("insert jobs %d..%d: %w", lo, hi-1, err)
		}
		progress.Add(int64(hi - lo))
		return nil
	})
}

func (p *riverPeer) stored(ctx context.Context) (int64, error) {
	var n int64
	err := p.pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE queue = $1
		AND state NOT IN ('completed', 'cancelled', 'discarded')`, p.queue).Scan(&n)
	return n, err
}

func (p *riverPeer) flush() error { return nil }

func (p *riverPeer) drainer(int) drainer { panic("river drains with drain") }

// riverWorker settles each job's index in the tracker; its return is the
// job's ack (River marks it completed, in batches).
type riverWorker struct {
	river.WorkerDefaults[riverArgs]
	t      *tracker
	cancel context.CancelCauseFunc
}

func (rw *riverWorker) Work(_ context.Context, job *river.Job[riverArgs]) error {
	if rw.t.settle([]uint64{job.Args.I}) {
		rw.cancel(errDrained)
	}
	return nil
}

// drain runs a River client working this run's queue with Consumers
// workers until every job ran, then stops it (which flushes the
// completions) and returns.
func (p *riverPeer) drain(ctx context.Context, cancel context.CancelCauseFunc, w *workload, t *tracker) error {
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &riverWorker{t: t, cancel: cancel}); err != nil {
		return err
	}
	cd := time.Duration(max(w.drive.FetchCooldownMs, 1)) * time.Millisecond
	c, err := river.NewClient(riverpgxv5.New(p.pool), &river.Config{
		Queues:            map[string]river.QueueConfig{p.queue: {MaxWorkers: w.drive.Consumers}},
		Workers:           workers,
		FetchCooldown:     cd,
		FetchPollInterval: max(cd, 10*time.Millisecond),
		Logger:            quietLogger(),
	})
	if err != nil {
		return err
	}
	if err := c.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer scancel()
	stopErr := c.Stop(sctx)
	if err := context.Cause(ctx); !errors.Is(err, errDrained) {
		return errors.Join(err, stopErr)
	}
	return stopErr
}
