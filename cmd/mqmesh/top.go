package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/internal/meshview"
)

// topOptions are the flags of `mqmesh top`.
type topOptions struct {
	clientOptions
	Interval time.Duration
	Once     bool
}

func newTopCommand() *cobra.Command {
	o := &topOptions{}
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live view of the whole mesh, refreshed every second",
		Long: `Show every node of the mesh the server belongs to, refreshed every
--interval: its IDC and gossip state, tasks ready and leased, enqueue (in)
and ack (out) rates, the age of its oldest ready task, its active throttles,
where its tasks ran (leases by local, same-IDC and other-IDC workers) and an
alert column (DOWN, SUSPECT, oldest over 30s, throttled, dead tasks). Each
IDC gets a sum row. q or Ctrl-C quits.

With --once it prints one frame and exits (no terminal needed), as text or
with --json as the snapshot.`,
		Example: `  mqmesh top --server nats://127.0.0.1:4222
  mqmesh top --once`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			if o.Interval < 100*time.Millisecond {
				return fmt.Errorf("--interval %s: must be at least 100ms", o.Interval)
			}
			return o.run(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	o.bind(cmd.Flags())
	cmd.Flags().DurationVar(&o.Interval, "interval", time.Second, "refresh interval")
	cmd.Flags().BoolVar(&o.Once, "once", false, "print one frame and exit")
	return cmd
}

func (o *topOptions) run(ctx context.Context, in io.Reader, out io.Writer) error {
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	idc, name := c.Node()
	take := func(ctx context.Context) (*meshview.Snapshot, error) {
		return meshview.Take(ctx, c.Conn(), idc, name, o.Timeout)
	}
	if o.Once {
		snap, err := take(ctx)
		if err != nil {
			return err
		}
		if o.JSON {
			return writeJSON(out, snap)
		}
		_, err = io.WriteString(out, renderTop(snap, nil, 0))
		return err
	}
	m := &topModel{take: take, ctx: ctx, interval: o.Interval}
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out), tea.WithAltScreen())
	_, err = p.Run()
	if err != nil && ctx.Err() != nil {
		return nil // cancelled: a normal end
	}
	return err
}

// topModel is the bubbletea model of `mqmesh top`: it holds the last
// snapshot; Update and View are pure, so tests drive them without a
// terminal.
type topModel struct {
	take     func(context.Context) (*meshview.Snapshot, error)
	ctx      context.Context
	interval time.Duration
	snap     *meshview.Snapshot
	err      error
	width    int
}

type snapMsg struct {
	snap *meshview.Snapshot
	err  error
}

type tickMsg struct{}

func (m *topModel) fetch() tea.Msg {
	s, err := m.take(m.ctx)
	return snapMsg{s, err}
}

func (m *topModel) Init() tea.Cmd { return m.fetch }

func (m *topModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.KeyMsg:
		switch msg.String() {
		case "q", "ctrl+c", "esc":
			return m, tea.Quit
		}
	case tea.WindowSizeMsg:
		m.width = msg.Width
	case snapMsg:
		if msg.err != nil {
			m.err = msg.err // keep showing the last good snapshot
		} else {
			m.snap, m.err = msg.snap, nil
		}
		return m, tea.Tick(m.interval, func(time.Time) tea.Msg { return tickMsg{} })
	case tickMsg:
		return m, m.fetch
	}
	return m, nil
}

func (m *topModel) View() string { return renderTop(m.snap, m.err, m.width) }

var (
	topBold  = lipgloss.NewStyle().Bold(true)
	topAlert = lipgloss.NewStyle().Foreground(lipgloss.Color("9")).Bold(true)
	topSum   = lipgloss.NewStyle().Faint(true)
)

// topColumns: name and width (a negative width left-aligns).
var topColumns = []struct {
	name  string
	width int
}{
	{"IDC", -8}, {"NODE", -10}, {"STATE", -7}, {"READY", 8}, {"LEASED", 7}, {"IN/s", 8}, {"OUT/s", 8},
	{"OLDEST", 7}, {"THROTTLES", -14}, {"RAN local/idc/other", -20}, {"ALERT", -1},
}

func topRow(cells ...string) string {
	var b strings.Builder
	for i, c := range cells {
		w := topColumns[i].width
		switch {
		case w == -1:
			b.WriteString(c)
		case w < 0:
			fmt.Fprintf(&b, "%-*s ", -w, c)
		default:
			fmt.Fprintf(&b, "%*s ", w, c)
		}
	}
	return b.String()
}

// renderTop draws a frame: a title, one row per node, a sum row per IDC.
func renderTop(s *meshview.Snapshot, err error, width int) string {
	var b strings.Builder
	if s == nil {
		if err != nil {
			return "mqmesh top: " + err.Error() + "\n"
		}
		return "mqmesh top: connecting...\n"
	}
	idcs := s.ByIDC()
	title := fmt.Sprintf("mqmesh top — %d nodes in %d IDCs, %d workers — %s", len(s.Nodes), len(idcs), s.Workers, s.Time.Format("15:04:05"))
	b.WriteString(topBold.Render(clip(title, width)) + "\n")
	if err != nil {
		b.WriteString(topAlert.Render(clip("last refresh failed: "+err.Error(), width)) + "\n")
	}
	names := make([]string, len(topColumns))
	for i, c := range topColumns {
		names[i] = c.name
	}
	b.WriteString(topBold.Render(clip(strings.TrimRight(topRow(names...), " "), width)) + "\n")
	for _, t := range idcs {
		for _, n := range s.Nodes {
			if n.IDC != t.IDC {
				continue
			}
			line := topRow(n.IDC, n.Name, n.State, count(n.Ready), count(n.Leased), rate(n.InRate), rate(n.OutRate),
				age(n.OldestReadyMs), strings.Join(n.Throttles, ","), ran(n.LeasesLocal, n.LeasesIDC, n.LeasesOther), "")
			if n.Alert != "" {
				line += topAlert.Render(n.Alert)
			}
			b.WriteString(clip(strings.TrimRight(line, " "), width) + "\n")
		}
		sum := topRow("Σ "+t.IDC, fmt.Sprintf("%d nodes", t.Nodes), "", count(t.Ready), count(t.Leased), rate(t.InRate), rate(t.OutRate),
			age(t.OldestReadyMs), "", ran(t.LeasesLocal, t.LeasesIDC, t.LeasesOther), downs(t.Down))
		b.WriteString(topSum.Render(clip(strings.TrimRight(sum, " "), width)) + "\n")
	}
	return b.String()
}

func count(n uint64) string { return fmt.Sprint(n) }

func rate(r float64) string { return fmt.Sprintf("%.1f", r) }

func age(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return (time.Duration(ms) * time.Millisecond).Round(100 * time.Millisecond).String()
}

func ran(local, idc, other uint64) string {
	total := local + idc + other
	if total == 0 {
		return "-"
	}
	pct := func(n uint64) uint64 { return (n*100 + total/2) / total }
	return fmt.Sprintf("%d%%/%d%%/%d%%", pct(local), pct(idc), pct(other))
}

func downs(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d down", n)
}

// clip cuts a line to the terminal width (0: no limit).
func clip(s string, width int) string {
	if width <= 0 {
		return s
	}
	return ansi.Truncate(s, width, "…")
}
