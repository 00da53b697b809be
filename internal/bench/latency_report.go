package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// writeLatencyTable prints a latency report for people.
func writeLatencyTable(w io.Writer, r *LatencyReport) error {
	var b strings.Builder
	fmt.Fprintf(&b, "mqmesh bench latency: durability %s, %.0fs per rate (first %.1fs left out), %d B tasks, one task per send, %d CPUs\n\n",
		r.Durability, r.DurationS, r.WarmupS, r.Size, r.CPUs)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "peer\tlevel\toffered/s\tachieved/s\tstart p50 ms\tstart p99 ms\tstart p99.9 ms\tack p50 ms\tack p99 ms\tack p99.9 ms\tsend p99 ms\thandled\t")
	for _, p := range r.Peers {
		fmt.Fprintf(tw, "%s\tmax\t\t%s\t\t\t\t\t\t\t\t\t\n", p.Peer, thousands(p.MaxPerS))
		for _, run := range p.Runs {
			level := "-"
			if run.Level > 0 {
				level = fmt.Sprintf("%d%%", run.Level)
			}
			state := fmt.Sprintf("%d/%d", run.Handled, run.Sent)
			if run.Saturated {
				state += " saturated"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", p.Peer, level, thousands(run.Offered), thousands(run.Achieved),
				msCell(run.Start.P50), msCell(run.Start.P99), msCell(run.Start.P999), msCell(run.Ack.P50), msCell(run.Ack.P99), msCell(run.Ack.P999), msCell(run.Send.P99), state)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString("\nstart = scheduled send -> handler start; ack = scheduled send -> enqueue acknowledged; send = scheduled send ->\n" +
		"the send call (the pacer's own lateness: a floor that is the machine's, not the peer's); level = percent of the\n" +
		"peer's own maximum (- for the absolute rates, the same for every peer). A latency of 'unhandled' means the\n" +
		"percentile fell on a task never handled within the settle timeout.\n")
	for _, p := range r.Peers {
		if p.Error != "" {
			fmt.Fprintf(&b, "error: %s: %s\n", p.Peer, p.Error)
		}
	}
	b.WriteString("\nnotes:\n")
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func msCell(v float64) string {
	if v < 0 {
		return "unhandled"
	}
	return fmt.Sprintf("%.2f", v)
}
