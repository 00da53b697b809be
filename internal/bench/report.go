package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// ReportSchema names the JSON layout; it changes only when a field is
// removed or changes meaning (fields may be added).
const ReportSchema = "mqmesh.bench.node/v1"

// Report is the outcome of `bench node`, printed as a table or as JSON.
type Report struct {
	Schema   string    `json:"schema"`
	Config   Config    `json:"config"`
	Pairs    []Pair    `json:"pairs"`
	Backlogs []Backlog `json:"backlogs,omitempty"`
	// Grid is every run of the peers' tuning grids (bench node --tune);
	// each pairing's results ran the best drive of its peer's grid.
	Grid []GridRun `json:"grid,omitempty"`
	// OK is true when every run finished and no task was lost.
	OK    bool     `json:"ok"`
	Notes []string `json:"notes"`
}

// Config is the workload every peer ran.
type Config struct {
	Tune      bool `json:"tune"`
	TuneCount int  `json:"tune_count"`
	// TuneCountFsync is the tasks per grid run in the fsync pairing.
	TuneCountFsync int `json:"tune_count_fsync"`
	// TuneCountRepl is the tasks per grid run in the repl pairing.
	TuneCountRepl int `json:"tune_count_repl,omitempty"`
	// ReplRounds is how many times the repl pairing's runs took turns.
	ReplRounds int     `json:"repl_rounds,omitempty"`
	Count      int     `json:"count"`
	Size       int     `json:"size_bytes"`
	Batch      int     `json:"batch"`
	Producers  int     `json:"producers"`
	Consumers  int     `json:"consumers"`
	LeaseS     float64 `json:"lease_s"`
	CPUs       int     `json:"cpus"`
	GoVersion  string  `json:"go_version"`
	Platform   string  `json:"platform"`
}

// Pair is one pairing: mqnode and JetStream at comparable durability.
type Pair struct {
	Pair      string `json:"pair"` // "async" or "fsync"
	MQNode    Result `json:"mqnode"`
	JetStream Result `json:"jetstream"`
	// Ratio is mqnode / JetStream; absent unless both runs succeeded.
	Ratio *Ratio `json:"ratio,omitempty"`
	// River is River on PostgreSQL (bench node --peers river), and
	// RatioRiver mqnode / River.
	River      *Result `json:"river,omitempty"`
	RatioRiver *Ratio  `json:"ratio_river,omitempty"`
	// MQNodeSecure is mqnode with TLS and authentication (--secure), and
	// SecureCost is MQNodeSecure / MQNode.
	MQNodeSecure *Result `json:"mqnode_secure,omitempty"`
	SecureCost   *Ratio  `json:"secure_cost,omitempty"`
	// The repl pairing (repl.go): MQNode is mqnode-r1 (local durability
	// async, replicas 1 sync) and JetStream jetstream-r3 (R3, default
	// sync). ReplicatedFsync is mqnode-r1 with fsync on both nodes and
	// Unreplicated the single mqnode at fsync, both with mqnode-r1's drive;
	// ReplicationCost is MQNode / Unreplicated and ReplicationCostFsync
	// ReplicatedFsync / Unreplicated.
	ReplicatedFsync      *Result `json:"replicated_fsync,omitempty"`
	Unreplicated         *Result `json:"unreplicated,omitempty"`
	ReplicationCost      *Ratio  `json:"replication_cost,omitempty"`
	ReplicationCostFsync *Ratio  `json:"replication_cost_fsync,omitempty"`
	// Rounds are every run of the repl pairing, in the order they ran
	// (the results above are the median rounds).
	Rounds []Result `json:"rounds,omitempty"`
}

// Result is one peer's run.
type Result struct {
	Peer       string `json:"peer"`       // "mqnode" or "jetstream"
	Durability string `json:"durability"` // mqnode: async, fsync; jetstream: default, sync_always; river: synchronous_commit_off, synchronous_commit_on
	Drive      Drive  `json:"drive"`      // how the peer was driven (the best of its grid with --tune)
	// Skipped says why the peer did not run (River without PostgreSQL).
	Skipped    string `json:"skipped,omitempty"`
	Enqueued   int64  `json:"enqueued"`   // enqueues acknowledged as durable
	Delivered  int64  `json:"delivered"`  // distinct tasks delivered and acked
	Duplicates int64  `json:"duplicates"` // deliveries of a task already acked
	Lost       int64  `json:"lost"`       // tasks enqueued - delivered
	OK         bool   `json:"ok"`         // no error and delivered == enqueued == count

	EnqueueS    float64 `json:"enqueue_s"`
	EnqueuePerS float64 `json:"enqueue_per_s"`
	DrainS      float64 `json:"drain_s"`
	DrainPerS   float64 `json:"drain_per_s"`
	EndToEndS   float64 `json:"end_to_end_s"`

	PeakRSSMiB         float64 `json:"peak_rss_mib"`         // VmHWM of the server process
	SampledPeakRSSMiB  float64 `json:"sampled_peak_rss_mib"` // largest VmRSS sampled during the workload
	PeakAnonMiB        float64 `json:"peak_anon_mib"`        // largest RssAnon sampled (heap, stacks)
	PeakFileMiB        float64 `json:"peak_file_mib"`        // largest RssFile sampled (mapped files)
	RSSAfterEnqueueMiB float64 `json:"rss_after_enqueue_mib"`
	FinalRSSMiB        float64 `json:"final_rss_mib"`
	CPUS               float64 `json:"cpu_s"` // server user+system CPU during the workload
	// Replication is what mqnode-r1's primary said of its buddy after the
	// workload (repl pairing).
	Replication *ReplFigures `json:"replication,omitempty"`

	Error string `json:"error,omitempty"`
}

// ReplFigures are a replicated primary's replication figures (its stats).
type ReplFigures struct {
	State string `json:"state"` // replicated while the buddy confirms
	// AckedRecords are the writes (puts and deletes) the buddy confirmed,
	// in Batches round trips: records per batch is the group commit.
	AckedRecords uint64 `json:"acked_records"`
	Batches      uint64 `json:"batches"`
	// UnreplicatedAcks are enqueues acknowledged without the buddy (0 in
	// sync mode with the buddy up).
	UnreplicatedAcks uint64 `json:"unreplicated_acks"`
	// LastBatchRTTMs is the last shipping round trip, as the primary
	// measured it.
	LastBatchRTTMs float64 `json:"last_batch_rtt_ms"`
}

// Ratio is mqnode / JetStream for each figure.
type Ratio struct {
	EnqueuePerS float64 `json:"enqueue_per_s"`
	DrainPerS   float64 `json:"drain_per_s"`
	EndToEndS   float64 `json:"end_to_end_s"`
	PeakRSS     float64 `json:"peak_rss"`
	PeakAnon    float64 `json:"peak_anon"`
	CPUS        float64 `json:"cpu_s"`
}

// Backlog is a backlog-growth run on one peer.
type Backlog struct {
	Peer       string        `json:"peer"`
	Durability string        `json:"durability"`
	Steps      []BacklogStep `json:"steps"`
	// DrainTasks were drained from a node holding nothing else
	// (EmptyDrainPerS), then from the head of the full backlog
	// (DeepDrainPerS); DrainRatio = deep / empty.
	DrainTasks     int     `json:"drain_tasks,omitempty"`
	EmptyDrainPerS float64 `json:"empty_drain_per_s,omitempty"`
	DeepDrainPerS  float64 `json:"deep_drain_per_s,omitempty"`
	DrainRatio     float64 `json:"drain_ratio,omitempty"`
	Error          string  `json:"error,omitempty"`
}

// BacklogStep is the server's state once the backlog reached a step.
type BacklogStep struct {
	Backlog     int64   `json:"backlog"` // tasks the node reports stored
	Added       int64   `json:"added"`
	EnqueueS    float64 `json:"enqueue_s"`
	EnqueuePerS float64 `json:"enqueue_per_s"`
	RSSMiB      float64 `json:"rss_mib"`      // VmRSS at the end of the step
	AnonMiB     float64 `json:"anon_mib"`     // RssAnon at the end of the step (heap, stacks)
	FileMiB     float64 `json:"file_mib"`     // RssFile at the end of the step (mapped files)
	PeakRSSMiB  float64 `json:"peak_rss_mib"` // largest VmRSS sampled in the step
	HWMMiB      float64 `json:"hwm_mib"`      // VmHWM so far
	DiskMiB     float64 `json:"disk_mib"`     // data directory, allocated blocks
	// DiskBytesPerTask is the data directory's size over the backlog.
	DiskBytesPerTask float64 `json:"disk_bytes_per_task"`
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func newRatio(m, j Result) *Ratio {
	if !m.OK || !j.OK {
		return nil
	}
	return &Ratio{
		EnqueuePerS: ratio(m.EnqueuePerS, j.EnqueuePerS),
		DrainPerS:   ratio(m.DrainPerS, j.DrainPerS),
		EndToEndS:   ratio(m.EndToEndS, j.EndToEndS),
		PeakRSS:     ratio(m.PeakRSSMiB, j.PeakRSSMiB),
		PeakAnon:    ratio(m.PeakAnonMiB, j.PeakAnonMiB),
		CPUS:        ratio(m.CPUS, j.CPUS),
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// writeJSON prints a report as indented JSON.
func writeJSON[R any](w io.Writer, r *R) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// output returns how a report is printed: as JSON, or by table.
func output[R any](asJSON bool, table func(io.Writer, *R) error) func(io.Writer, *R) error {
	if asJSON {
		return writeJSON[R]
	}
	return table
}

// writeTable prints r for people.
func writeTable(w io.Writer, r *Report) error {
	c := r.Config
	var b strings.Builder
	fmt.Fprintf(&b, "mqmesh bench node: %s tasks of %d B, batch %d, %d producers, %d consumers, loopback TCP, %d CPUs, %s\n\n",
		thousands(float64(c.Count)), c.Size, c.Batch, c.Producers, c.Consumers, c.CPUs, c.GoVersion)
	if len(r.Pairs) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "pairing\tpeer\tdurability\tenqueue/s\tdrain/s\tend-to-end s\tpeak RSS MiB\tpeak anon MiB\tcpu s\tdelivered\t")
		for _, p := range r.Pairs {
			for _, res := range p.results() {
				if res.Skipped != "" {
					fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\t\t\t\tskipped\t\n", p.Pair, res.Peer, res.Durability)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%s\t\n", p.Pair, res.Peer, res.Durability,
					thousands(res.EnqueuePerS), thousands(res.DrainPerS), res.EndToEndS, orDash("%.1f", res.PeakRSSMiB),
					orDash("%.1f", res.PeakAnonMiB), orDash("%.1f", res.CPUS), delivered(res))
			}
			for _, q := range []struct {
				name string
				r    *Ratio
			}{{"mqnode/jetstream", p.Ratio}, {"mqnode/river", p.RatioRiver},
				{"r1 async / unreplicated fsync", p.ReplicationCost}, {"r1 fsync / unreplicated fsync", p.ReplicationCostFsync}} {
				if q.r != nil {
					fmt.Fprintf(tw, "%s\tratio\t%s\t%.2fx\t%.2fx\t%.2fx\t%s\t%s\t%s\t\t\n", p.Pair, q.name,
						q.r.EnqueuePerS, q.r.DrainPerS, q.r.EndToEndS, orDash("%.2fx", q.r.PeakRSS), orDash("%.2fx", q.r.PeakAnon), orDash("%.2fx", q.r.CPUS))
				}
			}
			if q := p.SecureCost; q != nil {
				fmt.Fprintf(tw, "%s\tsecure cost\tmqnode+tls/mqnode\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t\t\n", p.Pair,
					q.EnqueuePerS, q.DrainPerS, q.EndToEndS, q.PeakRSS, q.PeakAnon, q.CPUS)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		b.WriteString("\nratio = mqnode / jetstream: above 1 is better for enqueue/s and drain/s, below 1 is better for\n" +
			"end-to-end s, peak RSS (VmHWM of the server process), peak anon (largest RssAnon sampled: heap and\n" +
			"stacks, without mapped files) and cpu s (server CPU during the workload).\n")
		b.WriteString("\ndrives (how each peer was driven")
		if r.Config.Tune {
			fmt.Fprintf(&b, ": the best of its grid of %d-task runs (fsync: %d), per pairing; the whole grid is in --json", r.Config.TuneCount, r.Config.TuneCountFsync)
		}
		b.WriteString("):\n")
		for _, p := range r.Pairs {
			for _, res := range p.results() {
				fmt.Fprintf(&b, "- %s %s: %s\n", p.Pair, res.Peer, res.Drive)
			}
		}
		for _, res := range r.Pairs[0].results() {
			if res.Skipped != "" {
				fmt.Fprintf(&b, "%s skipped: %s\n", res.Peer, res.Skipped)
			}
		}
		for _, p := range r.Pairs {
			for _, res := range p.results() {
				if f := res.Replication; f != nil {
					fmt.Fprintf(&b, "%s %s %s: buddy %s, %d records confirmed in %d batches (%.0f per round trip; last round trip %.1f ms), %d enqueues acknowledged without it\n",
						p.Pair, res.Peer, res.Durability, f.State, f.AckedRecords, f.Batches, ratio(float64(f.AckedRecords), float64(f.Batches)), f.LastBatchRTTMs, f.UnreplicatedAcks)
				}
			}
		}
		for _, p := range r.Pairs {
			for _, res := range p.results() {
				if res.Error != "" {
					fmt.Fprintf(&b, "error: %s %s %s: %s\n", p.Pair, res.Peer, res.Durability, res.Error)
				}
			}
		}
	}
	for _, bl := range r.Backlogs {
		fmt.Fprintf(&b, "\nbacklog growth, %s durability %s (enqueue only, no consumers):\n", bl.Peer, bl.Durability)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "backlog\tenqueue/s\tRSS MiB\tanon MiB\tfile MiB\tpeak RSS MiB (step)\tVmHWM MiB\tdisk MiB\tdisk B/task\t")
		for _, s := range bl.Steps {
			fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t\n", thousands(float64(s.Backlog)), thousands(s.EnqueuePerS),
				s.RSSMiB, s.AnonMiB, s.FileMiB, s.PeakRSSMiB, s.HWMMiB, s.DiskMiB, s.DiskBytesPerTask)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if bl.DrainTasks > 0 {
			fmt.Fprintf(&b, "drain of %s tasks: %s/s from an empty node, %s/s from the head of the backlog (%.2f×)\n",
				thousands(float64(bl.DrainTasks)), thousands(bl.EmptyDrainPerS), thousands(bl.DeepDrainPerS), bl.DrainRatio)
		}
		if bl.Error != "" {
			fmt.Fprintf(&b, "error: backlog %s: %s\n", bl.Peer, bl.Error)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\nnotes:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// orDash formats v, or "-" when it is 0 (not measured).
func orDash(format string, v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// results are the pairing's peers in table order.
func (p Pair) results() []Result {
	rs := []Result{p.MQNode}
	for _, r := range []*Result{p.MQNodeSecure, p.ReplicatedFsync, p.Unreplicated} {
		if r != nil {
			rs = append(rs, *r)
		}
	}
	if p.JetStream.Peer != "" {
		rs = append(rs, p.JetStream)
	}
	if p.River != nil {
		rs = append(rs, *p.River)
	}
	return rs
}

func delivered(r Result) string {
	s := fmt.Sprintf("%d/%d", r.Delivered, r.Enqueued)
	switch {
	case r.Error != "":
		return s + " error"
	case !r.OK:
		return s + " LOST"
	case r.Duplicates > 0:
		return fmt.Sprintf("%s ok (+%d dup)", s, r.Duplicates)
	}
	return s + " ok"
}

// thousands formats v rounded to an integer with comma separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
