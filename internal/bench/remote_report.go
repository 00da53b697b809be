package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// RemoteSchema names the JSON layout of `bench remote`.
const RemoteSchema = "mqmesh.bench.remote/v1"

// RemoteReport is the outcome of `bench remote`.
type RemoteReport struct {
	Schema string `json:"schema"`
	Count  int    `json:"count"`
	Size   int    `json:"size_bytes"`
	CPUs   int    `json:"cpus"`
	// Netns says whether the node ran in a network namespace; when not,
	// NetnsSkipped says why (the link is then loopback plus the delay).
	Netns        bool         `json:"netns"`
	NetnsSkipped string       `json:"netns_skipped,omitempty"`
	Links        []RemoteLink `json:"links"`
	OK           bool         `json:"ok"`
	Notes        []string     `json:"notes"`
}

// RemoteLink is every drainer on one link.
type RemoteLink struct {
	Name string `json:"name"` // local, or rtt-<d>
	// AddedRTTMs is the delay added per round trip; MeasuredRTTMs is the
	// NATS round trip the worker's connection measured.
	AddedRTTMs    float64     `json:"added_rtt_ms"`
	MeasuredRTTMs float64     `json:"measured_rtt_ms"`
	Runs          []RemoteRun `json:"runs"`
	Error         string      `json:"error,omitempty"`
}

// RemoteRun is one drainer's throughput on a link.
type RemoteRun struct {
	Drainer string  `json:"drainer"` // pool, or client PULLSxBATCH
	PerS    float64 `json:"per_s"`
	// VsLocal is PerS / the same drainer's local PerS.
	VsLocal float64 `json:"vs_local"`
	// TasksPerPull is the pool's average pull size (pool runs only).
	TasksPerPull float64 `json:"tasks_per_pull,omitempty"`
	// PullBatch is the batch an auto-sized Puller chose.
	PullBatch int    `json:"pull_batch,omitempty"`
	Error     string `json:"error,omitempty"`
}

func writeRemoteTable(w io.Writer, r *RemoteReport) error {
	var b strings.Builder
	where := "a network namespace (veth)"
	if !r.Netns {
		where = "loopback (" + r.NetnsSkipped + ")"
	}
	fmt.Fprintf(&b, "mqmesh bench remote: %s tasks of %d B drained by one worker; remote node in %s, %d CPUs\n\n",
		thousands(float64(r.Count)), r.Size, where, r.CPUs)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "link\tadded RTT ms\tmeasured RTT ms\tdrainer\ttasks/s\tvs local\ttasks/pull\t")
	for _, l := range r.Links {
		for _, run := range l.Runs {
			vs := fmt.Sprintf("%.0f%%", 100*run.VsLocal)
			if run.Error != "" {
				vs = "error"
			}
			perPull := ""
			if run.TasksPerPull > 0 {
				perPull = fmt.Sprintf("%.1f", run.TasksPerPull)
			}
			if run.PullBatch > 0 {
				perPull = fmt.Sprintf("batch %d", run.PullBatch)
			}
			fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%s\t%s\t%s\t%s\t\n", l.Name, l.AddedRTTMs, l.MeasuredRTTMs, run.Drainer, thousands(run.PerS), vs, perPull)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range r.Links {
		if l.Error != "" {
			fmt.Fprintf(&b, "error: %s: %s\n", l.Name, l.Error)
		}
		for _, run := range l.Runs {
			if run.Error != "" {
				fmt.Fprintf(&b, "error: %s %s: %s\n", l.Name, run.Drainer, run.Error)
			}
		}
	}
	b.WriteString("\nnotes:\n")
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
