package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// `bench compare BASE NEW` compares two JSON reports of the same bench
// (node, latency or remote) figure by figure and flags each figure that got worse
// by more than --threshold (default 15 %). It exits non-zero when one did,
// so scripts/bench-compare.sh can say so; it is not part of CI's pass/fail
// (a shared machine's figures move more than that).

// metric is one comparable figure of a report.
type metric struct {
	value        float64
	higherBetter bool
}

func newCompareCommand() *cobra.Command {
	var threshold float64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "compare BASE.json NEW.json",
		Short: "Compare two bench reports and flag regressions",
		Long: "Compares two --json reports of `bench node`, `bench latency` or `bench remote` figure by figure (throughput: higher is\n" +
			"better; latency, time, RSS and CPU: lower is better) and flags every figure worse by more than\n" +
			"--threshold percent. Exits 1 when any regressed. Figures only one report has are listed as such.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			base, err := readMetrics(args[0])
			if err != nil {
				return err
			}
			cur, err := readMetrics(args[1])
			if err != nil {
				return err
			}
			c := compareMetrics(base, cur, threshold/100)
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), &c); err != nil {
					return err
				}
			} else if err := writeComparison(cmd.OutOrStdout(), c, threshold); err != nil {
				return err
			}
			if len(c.Regressions) > 0 {
				return fmt.Errorf("%d figures regressed by more than %.0f%%: %s", len(c.Regressions), threshold, strings.Join(c.Regressions, ", "))
			}
			return nil
		},
	}
	cmd.Flags().Float64Var(&threshold, "threshold", 15, "percent by which a figure may get worse before it is flagged")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the comparison as JSON")
	return cmd
}

// Comparison is the outcome of `bench compare`.
type Comparison struct {
	Figures     []FigureChange `json:"figures"`
	Regressions []string       `json:"regressions"`
	OnlyBase    []string       `json:"only_base,omitempty"`
	OnlyNew     []string       `json:"only_new,omitempty"`
}

// FigureChange is one figure in both reports.
type FigureChange struct {
	Name string  `json:"name"`
	Base float64 `json:"base"`
	New  float64 `json:"new"`
	// Change is how much better (positive) or worse (negative) the new
	// figure is, as a fraction of the base.
	Change    float64 `json:"change"`
	Regressed bool    `json:"regressed"`
}

func compareMetrics(base, cur map[string]metric, threshold float64) Comparison {
	c := Comparison{Figures: []FigureChange{}, Regressions: []string{}}
	for _, name := range slices.Sorted(maps.Keys(base)) {
		b := base[name]
		n, ok := cur[name]
		if !ok {
			c.OnlyBase = append(c.OnlyBase, name)
			continue
		}
		f := FigureChange{Name: name, Base: b.value, New: n.value}
		if b.value != 0 {
			f.Change = (n.value - b.value) / b.value
			if !b.higherBetter {
				f.Change = -f.Change
			}
		}
		f.Regressed = f.Change < -threshold
		if f.Regressed {
			c.Regressions = append(c.Regressions, name)
		}
		c.Figures = append(c.Figures, f)
	}
	for _, name := range slices.Sorted(maps.Keys(cur)) {
		if _, ok := base[name]; !ok {
			c.OnlyNew = append(c.OnlyNew, name)
		}
	}
	return c
}

func writeComparison(w io.Writer, c Comparison, threshold float64) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tbase\tnew\tchange\t")
	for _, f := range c.Figures {
		flag := ""
		if f.Regressed {
			flag = "REGRESSION"
		}
		fmt.Fprintf(tw, "%s\t%.4g\t%.4g\t%+.1f%%\t%s\n", f.Name, f.Base, f.New, 100*f.Change, flag)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range c.OnlyBase {
		fmt.Fprintf(w, "only in base: %s\n", n)
	}
	for _, n := range c.OnlyNew {
		fmt.Fprintf(w, "only in new: %s\n", n)
	}
	fmt.Fprintf(w, "\nchange: positive is better. %d of %d figures regressed by more than %.0f%%.\n", len(c.Regressions), len(c.Figures), threshold)
	return nil
}

// readMetrics reads a bench JSON report and returns its figures by name.
func readMetrics(path string) (map[string]metric, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var head struct {
		Schema string `json:"schema"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m := map[string]metric{}
	switch head.Schema {
	case ReportSchema:
		var r Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, p := range r.Pairs {
			for _, res := range p.results() {
				if !res.OK {
					continue
				}
				k := "node/" + p.Pair + "/" + res.Peer + "/"
				m[k+"enqueue_per_s"] = metric{res.EnqueuePerS, true}
				m[k+"drain_per_s"] = metric{res.DrainPerS, true}
				m[k+"end_to_end_s"] = metric{res.EndToEndS, false}
				if res.PeakRSSMiB > 0 {
					m[k+"peak_rss_mib"] = metric{res.PeakRSSMiB, false}
				}
			}
		}
		for _, bl := range r.Backlogs {
			for _, s := range bl.Steps {
				k := fmt.Sprintf("backlog/%s/%d/", bl.Peer, s.Backlog)
				m[k+"enqueue_per_s"] = metric{s.EnqueuePerS, true}
				m[k+"rss_mib"] = metric{s.RSSMiB, false}
			}
		}
	case LatencySchema:
		var r LatencyReport
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, p := range r.Peers {
			m["latency/"+p.Peer+"/max_per_s"] = metric{p.MaxPerS, true}
			for _, run := range p.Runs {
				// Runs at a level offer a share of a maximum that moves
				// between runs; they are compared by level.
				k := fmt.Sprintf("latency/%s/rate-%.0f/", p.Peer, run.Offered)
				if run.Level > 0 {
					k = fmt.Sprintf("latency/%s/level-%d/", p.Peer, run.Level)
				}
				if run.Error != "" || run.Saturated {
					continue
				}
				m[k+"start_p99_ms"] = metric{run.Start.P99, false}
				m[k+"ack_p99_ms"] = metric{run.Ack.P99, false}
			}
		}
	case RemoteSchema:
		var r RemoteReport
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, l := range r.Links {
			for _, run := range l.Runs {
				if run.Error == "" {
					m["remote/"+l.Name+"/"+strings.ReplaceAll(run.Drainer, " ", "-")+"/per_s"] = metric{run.PerS, true}
				}
			}
		}
	default:
		return nil, fmt.Errorf("%s: schema %q: want %s, %s or %s", path, head.Schema, ReportSchema, LatencySchema, RemoteSchema)
	}
	if len(m) == 0 {
		return nil, errors.New(path + ": no figures (every run failed?)")
	}
	return m, nil
}
