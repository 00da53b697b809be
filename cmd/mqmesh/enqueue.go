package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/mqnode"
)

// Defaults of `mqmesh enqueue`.
const (
	defaultEnqueueBatch = 1000
	defaultPayloadSize  = 64
)

// enqueueOptions are the flags of `mqmesh enqueue`.
type enqueueOptions struct {
	clientOptions
	Queue       string
	Count       int
	Size        int
	Payload     string
	File        string
	Delay       time.Duration
	TTL         time.Duration
	MaxAttempts uint32
	Dedup       string
	Headers     []string
	Batch       int
	IDs         bool

	// changed reports whether a flag was given (cmd.Flags().Changed).
	changed func(name string) bool
	// headers is Headers parsed by Validate.
	headers map[string]string
}

// enqueueJSON is the stable --json output of `mqmesh enqueue`.
type enqueueJSON struct {
	Queue string `json:"queue"`
	IDC   string `json:"idc"`
	Node  string `json:"node"`
	// IDs of the tasks in enqueue order; a duplicate's id is the id of the
	// earlier task with the same dedup key.
	IDs []string `json:"ids"`
	// Duplicates counts the tasks whose dedup key matched an earlier enqueue.
	Duplicates int `json:"duplicates"`
	// Count is how many tasks were enqueued; Seconds how long it took.
	Count   int     `json:"count"`
	Seconds float64 `json:"seconds"`
	// Copies counts, for --queue topic:T, the tasks written into T's
	// subscribed queues (ids holds the first copy of each task).
	Copies int `json:"copies,omitempty"`
}

func newEnqueueCommand() *cobra.Command {
	o := &enqueueOptions{clientOptions: clientOptions{sec: securityFlags{def: secrets.RoleProducer}}}
	cmd := &cobra.Command{
		Use:   "enqueue",
		Short: "Enqueue tasks on a queue",
		Long: `Enqueue tasks on a queue of one node and print one summary line: how many,
where, how fast, how many were duplicates. --ids prints the task ids
instead, one per line (the summary then goes to stderr); --json prints both.
A long run reports its progress on stderr.

The payload is --payload TEXT, the contents of --file (- for stdin), or
--count random payloads of --size bytes (the default: one of 64 bytes).
Tasks are sent in batches of at most --batch tasks and one NATS message,
up to 4 requests in flight (mqnode.Enqueuer).
With --count N and --dedup KEY, task i gets the dedup key KEY-i, so running
the same command again enqueues nothing new.`,
		Example: `  mqmesh enqueue --queue orders --payload '{"id": 7}'
  mqmesh enqueue --queue load --count 100000 --size 512
  mqmesh enqueue --queue load --count 10 --ids
  mqmesh enqueue --queue topic:orders --header tier=gold --payload '{"id": 8}'
  mqmesh enqueue --queue load --count 100000 --size 512 --json
  mqmesh enqueue --queue mail --file msg.eml --delay 10m --header tenant=acme`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.changed = cmd.Flags().Changed
			if err := o.Validate(); err != nil {
				return err
			}
			return o.run(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	o.bind(fs)
	fs.StringVarP(&o.Queue, "queue", "q", "", "queue to enqueue on, or topic:T to fan out into topic T's queues (required)")
	fs.IntVarP(&o.Count, "count", "n", 1, "number of tasks with random payloads")
	fs.IntVar(&o.Size, "size", defaultPayloadSize, "size of each random payload, in bytes")
	fs.StringVar(&o.Payload, "payload", "", "payload of the task, as text")
	fs.StringVarP(&o.File, "file", "f", "", "file whose contents are the payload (- for stdin)")
	fs.DurationVar(&o.Delay, "delay", 0, "deliver no earlier than this from now")
	fs.DurationVar(&o.TTL, "ttl", 0, "retention of the tasks (0: the queue's)")
	fs.Uint32Var(&o.MaxAttempts, "max-attempts", 0, "deliveries before dead-lettering (0: the queue's)")
	fs.StringVar(&o.Dedup, "dedup", "", "producer dedup key (with --count N: KEY-0 .. KEY-(N-1))")
	fs.StringArrayVarP(&o.Headers, "header", "H", nil, "task header key=value (repeatable)")
	fs.IntVar(&o.Batch, "batch", defaultEnqueueBatch, "most tasks per enqueue request")
	fs.BoolVar(&o.IDs, "ids", false, "print the task ids, one per line, instead of the summary (which goes to stderr)")
	return cmd
}

// Validate checks the flags and parses the headers.
func (o *enqueueOptions) Validate() error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if err := validateTarget(o.Queue); err != nil {
		return err
	}
	var sources []string
	for _, f := range []string{"payload", "file", "size"} {
		if o.changed(f) {
			sources = append(sources, "--"+f)
		}
	}
	if len(sources) > 1 {
		return fmt.Errorf("%s: give one payload source", strings.Join(sources, " and "))
	}
	if o.changed("count") && (o.changed("payload") || o.changed("file")) {
		return errors.New("--count goes with random payloads (--size), not with --payload or --file")
	}
	switch {
	case o.Count < 1:
		return fmt.Errorf("--count %d: must be at least 1", o.Count)
	case o.Size < 0:
		return fmt.Errorf("--size %d: must not be negative", o.Size)
	case o.Batch < 1:
		return fmt.Errorf("--batch %d: must be at least 1", o.Batch)
	case o.Delay < 0:
		return fmt.Errorf("--delay %s: must not be negative", o.Delay)
	case o.TTL < 0:
		return fmt.Errorf("--ttl %s: must not be negative", o.TTL)
	case o.changed("dedup") && o.Dedup == "":
		return errors.New("--dedup: empty key")
	case o.changed("file") && o.File == "":
		return errors.New("--file: empty path")
	}
	o.headers = nil
	for _, h := range o.Headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return fmt.Errorf("--header %q: want key=value", h)
		}
		if o.headers == nil {
			o.headers = map[string]string{}
		}
		o.headers[k] = v
	}
	return nil
}

// fixedPayload returns the payload of --payload or --file, or nil when the
// payloads are random.
func (o *enqueueOptions) fixedPayload(stdin io.Reader) ([]byte, error) {
	switch {
	case o.changed("payload"):
		return []byte(o.Payload), nil
	case o.File == "-":
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read payload from stdin: %w", err)
		}
		return b, nil
	case o.File != "":
		b, err := os.ReadFile(o.File)
		if err != nil {
			return nil, fmt.Errorf("read payload: %w", err)
		}
		return b, nil
	}
	return nil, nil
}

// item builds task i; payload nil means a random one of --size bytes.
func (o *enqueueOptions) item(i int, payload []byte) *mqnode.EnqueueItem {
	if payload == nil {
		payload = make([]byte, o.Size)
		rand.Read(payload)
	}
	it := &mqnode.EnqueueItem{
		Payload: payload, Headers: o.headers, DelayMs: o.Delay.Milliseconds(),
		TtlMs: o.TTL.Milliseconds(), MaxAttempts: o.MaxAttempts, DedupKey: o.Dedup,
	}
	if o.Dedup != "" && o.Count > 1 {
		it.DedupKey = fmt.Sprintf("%s-%d", o.Dedup, i)
	}
	return it
}

func (o *enqueueOptions) run(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
	payload, err := o.fixedPayload(stdin)
	if err != nil {
		return err
	}
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	idc, node := c.Node()
	out := enqueueJSON{Queue: o.Queue, IDC: idc, Node: node, IDs: make([]string, 0, o.Count)}
	start := time.Now()
	err = o.send(ctx, c, payload, &out, o.progress(stderr))
	out.Count, out.Seconds = len(out.IDs), time.Since(start).Seconds()
	if perr := o.print(stdout, stderr, out); err == nil {
		err = perr
	}
	if err != nil {
		return fmt.Errorf("enqueued %d of %d tasks on %s: %w", len(out.IDs), o.Count, o.Queue, err)
	}
	return nil
}

// enqueueRequests is how many enqueue requests `mqmesh enqueue` keeps out
// at once (mqnode.Enqueuer pipelines them).
const enqueueRequests = 4

// send enqueues the tasks through an mqnode.Enqueuer: batches of at most
// --batch tasks and one NATS message, several requests out at once. It
// stops handing tasks over at the first failure, waits for those out, and
// collects the ids of the stored tasks in enqueue order in out.
func (o *enqueueOptions) send(ctx context.Context, c *mqnode.Client, payload []byte, out *enqueueJSON, progress func(done int)) error {
	e, err := c.NewEnqueuer(o.Queue, mqnode.AsyncConfig{
		MaxBatch: o.Batch, MaxRequests: enqueueRequests, MaxInFlight: enqueueRequests * o.Batch, RequestTimeout: o.Timeout,
	})
	if err != nil {
		return err
	}
	defer e.Close()
	type outcome struct {
		r   *mqnode.EnqueueResult
		err error
	}
	results := make([]outcome, o.Count)
	var settled atomic.Int64
	var failed atomic.Bool
	sent := 0
	var sendErr error
	for i := range o.Count {
		if failed.Load() {
			break
		}
		if err := e.EnqueueFunc(ctx, o.item(i, payload), func(r *mqnode.EnqueueResult, err error) {
			results[i] = outcome{r, err}
			failed.CompareAndSwap(false, err != nil)
			settled.Add(1)
		}); err != nil {
			sendErr = err
			break
		}
		sent++
		if sent%o.Batch == 0 {
			progress(int(settled.Load()))
		}
	}
	e.Close() // every callback has run when Close returns
	for _, res := range results[:sent] {
		if res.err != nil {
			sendErr = cmp.Or(sendErr, res.err)
			continue
		}
		out.IDs = append(out.IDs, res.r.GetId())
		out.Copies += len(res.r.GetCopies())
		if res.r.GetDuplicate() {
			out.Duplicates++
		}
	}
	progress(len(out.IDs))
	return sendErr
}

// progress returns a progress reporter for runs of more than one batch: a
// counter on stderr when stderr is a terminal, else a line every 5 s.
func (o *enqueueOptions) progress(stderr io.Writer) func(done int) {
	if o.Count <= o.Batch {
		return func(int) {}
	}
	if isTerminal(stderr) {
		return func(done int) {
			fmt.Fprintf(stderr, "\renqueued %d/%d", done, o.Count)
			if done == o.Count {
				fmt.Fprintln(stderr)
			}
		}
	}
	last := time.Now()
	return func(done int) {
		if time.Since(last) >= 5*time.Second && done < o.Count {
			last = time.Now()
			fmt.Fprintf(stderr, "enqueued %d/%d\n", done, o.Count)
		}
	}
}

func (o *enqueueOptions) print(stdout, stderr io.Writer, out enqueueJSON) error {
	if o.JSON {
		return writeJSON(stdout, out)
	}
	summary := fmt.Sprintf("enqueued %d task(s) on %s at %s/%s in %.2fs (%.0f/s)", out.Count, out.Queue, out.IDC, out.Node,
		out.Seconds, float64(out.Count)/max(out.Seconds, 1e-9))
	if out.Copies > 0 {
		summary += fmt.Sprintf("; copies written into the topic's queues: %d", out.Copies)
	}
	if out.Duplicates > 0 {
		summary += fmt.Sprintf("; %d were duplicates of earlier enqueues (same dedup key)", out.Duplicates)
	}
	if !o.IDs {
		_, err := fmt.Fprintln(stdout, summary)
		return err
	}
	fmt.Fprintln(stderr, summary)
	w := bufio.NewWriter(stdout)
	for _, id := range out.IDs {
		w.WriteString(id)
		w.WriteByte('\n')
	}
	return w.Flush()
}
