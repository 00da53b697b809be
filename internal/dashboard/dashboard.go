// Package dashboard is the live web dashboard a node serves on its
// operations endpoint (`mqmesh node --http ADDR`), behind the endpoint's
// admin authentication (package opshttp):
//
//   - a mesh map: IDCs as groups, each node with its backlog, state and
//     alert, shaded by how much of its work ran in other IDCs;
//   - per-queue tables, a chart of the mesh's backlog and rates;
//   - active throttles and backend budgets;
//   - the dead letter queues: browse, requeue, purge;
//   - a task trace search.
//
// It updates live over server-sent events (/api/events): a snapshot of the
// mesh (package meshview) every Interval and, sooner, when a backlog notice
// arrives on the mesh's bl.> subjects. The front end is plain HTML, CSS and
// JavaScript embedded in the binary: nothing to build.
//
// JSON API (all behind the admin token):
//
//	GET  /api/snapshot                          the mesh now
//	GET  /api/events                            text/event-stream of snapshots
//	GET  /api/dlq?idc=&node=&queue=&after=      a page of dead tasks
//	POST /api/dlq/purge   {idc,node,queue,ids}  delete dead tasks (ids empty: all)
//	POST /api/dlq/requeue {idc,node,queue,ids}  make them ready again
//	GET  /api/trace?id=                         the life of a task
//
// POSTs must carry the header X-Mqmesh: 1 (a page of another origin cannot
// send it without a CORS preflight, which is never granted).
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqmesh/mqmesh/internal/meshview"
	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode"
)

//go:embed static
var static embed.FS

// Config configures a Dashboard.
type Config struct {
	// NC is a connection to the serving node (its requests reach the
	// whole mesh); IDC and Node name that node.
	NC        *nats.Conn
	IDC, Node string
	// Interval between snapshots on the event stream. Default 1s.
	Interval time.Duration
	// Timeout of each node's answer. Default 2s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Dashboard serves the web UI and its API.
type Dashboard struct{ cfg Config }

// New returns a dashboard.
func New(cfg Config) *Dashboard {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Dashboard{cfg: cfg}
}

// Handlers are the dashboard's routes, for opshttp.Config.Handlers.
func (d *Dashboard) Handlers() map[string]http.Handler {
	sub, _ := fs.Sub(static, "static")
	files := http.FileServerFS(sub)
	return map[string]http.Handler{
		"GET /{$}":              files,
		"GET /static/":          http.StripPrefix("/static/", files),
		"GET /api/snapshot":     http.HandlerFunc(d.snapshot),
		"GET /api/events":       http.HandlerFunc(d.events),
		"GET /api/dlq":          http.HandlerFunc(d.dlqList),
		"POST /api/dlq/purge":   d.post(false),
		"POST /api/dlq/requeue": d.post(true),
		"GET /api/trace":        http.HandlerFunc(d.trace),
	}
}

func (d *Dashboard) take(ctx context.Context) (*meshview.Snapshot, error) {
	return meshview.Take(ctx, d.cfg.NC, d.cfg.IDC, d.cfg.Node, d.cfg.Timeout)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func (d *Dashboard) snapshot(w http.ResponseWriter, r *http.Request) {
	s, err := d.take(r.Context())
	if err != nil {
		fail(w, http.StatusBadGateway, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

// events streams snapshots: every Interval, and at most every 250 ms while
// backlog notices arrive.
func (d *Dashboard) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		fail(w, http.StatusInternalServerError, errors.New("streaming unsupported"))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	notice := make(chan struct{}, 1)
	sub, err := d.cfg.NC.Subscribe("bl.>", func(*nats.Msg) {
		select {
		case notice <- struct{}{}:
		default:
		}
	})
	if err != nil {
		fail(w, http.StatusInternalServerError, err)
		return
	}
	defer sub.Unsubscribe()
	ctx := r.Context()
	var last time.Time
	send := func() bool {
		last = time.Now()
		s, err := d.take(ctx)
		if err != nil {
			_, err = fmt.Fprintf(w, "event: error\ndata: %q\n\n", err.Error())
		} else {
			b, _ := json.Marshal(s)
			_, err = fmt.Fprintf(w, "event: snapshot\ndata: %s\n\n", b)
		}
		fl.Flush()
		return err == nil
	}
	tick := time.NewTicker(d.cfg.Interval)
	defer tick.Stop()
	for send() {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-notice:
			if wait := 250*time.Millisecond - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
	}
}

// target reads and checks the node and queue a DLQ call is about.
type target struct {
	IDC   string   `json:"idc"`
	Node  string   `json:"node"`
	Queue string   `json:"queue"`
	IDs   []string `json:"ids"`
}

func (t target) validate() error {
	for _, f := range [][2]string{{"idc", t.IDC}, {"node", t.Node}, {"queue", t.Queue}} {
		if err := subject.Validate(f[0], f[1]); err != nil {
			return err
		}
	}
	return nil
}

func (d *Dashboard) client(t target) *mqnode.Client { return mqnode.NewClient(d.cfg.NC, t.IDC, t.Node) }

func (d *Dashboard) dlqList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	t := target{IDC: q.Get("idc"), Node: q.Get("node"), Queue: q.Get("queue")}
	if err := t.validate(); err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), d.cfg.Timeout)
	defer cancel()
	tasks, next, err := d.client(t).DLQList(ctx, t.Queue, q.Get("after"), 50)
	if err != nil {
		fail(w, http.StatusBadGateway, err)
		return
	}
	type deadJSON struct {
		DeadID  string    `json:"dead_id"`
		TaskID  string    `json:"task_id"`
		Reason  string    `json:"reason"`
		Dead    time.Time `json:"dead"`
		Attempt uint32    `json:"attempt"`
		Payload string    `json:"payload"` // first 200 bytes, as text
	}
	out := struct {
		Tasks []deadJSON `json:"tasks"`
		Next  string     `json:"next"`
	}{Tasks: []deadJSON{}, Next: next}
	for _, dt := range tasks {
		p := dt.GetTask().GetPayload()
		if len(p) > 200 {
			p = p[:200]
		}
		out.Tasks = append(out.Tasks, deadJSON{DeadID: dt.DeadId, TaskID: dt.GetTask().GetId(), Reason: dt.Reason,
			Dead: time.UnixMilli(dt.DeadUnixMs).UTC(), Attempt: dt.GetTask().GetAttempt(), Payload: string(p)})
	}
	writeJSON(w, http.StatusOK, out)
}

func (d *Dashboard) post(requeue bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Mqmesh") != "1" {
			fail(w, http.StatusForbidden, errors.New("missing X-Mqmesh header"))
			return
		}
		var t target
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&t); err != nil {
			fail(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
			return
		}
		if err := t.validate(); err != nil {
			fail(w, http.StatusBadRequest, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), d.cfg.Timeout)
		defer cancel()
		c := d.client(t)
		var n uint64
		var err error
		if requeue {
			n, err = c.DLQRequeue(ctx, t.Queue, t.IDs...)
		} else {
			n, err = c.DLQPurge(ctx, t.Queue, t.IDs...)
		}
		if err != nil {
			fail(w, http.StatusBadGateway, err)
			return
		}
		d.cfg.Logger.Info("dashboard changed a dead letter queue", "requeue", requeue, "idc", t.IDC, "node", t.Node, "queue", t.Queue, "affected", n)
		writeJSON(w, http.StatusOK, map[string]uint64{"affected": n})
	})
}

func (d *Dashboard) trace(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	reps, err := mqnode.FindTrace(r.Context(), d.cfg.NC, id, d.cfg.Timeout)
	if err != nil {
		fail(w, http.StatusBadRequest, err)
		return
	}
	if len(reps) == 0 {
		fail(w, http.StatusNotFound, fmt.Errorf("task %s: no node has its trace", id))
		return
	}
	writeJSON(w, http.StatusOK, reps[0])
}
