package sim

import (
	"bytes"
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Charts are drawn with gonum/plot (well kept, pure Go, SVG and PNG
// without a browser).

var palette = []color.RGBA{
	{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, {R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, {R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, {R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
}

type series struct {
	name   string
	xy     plotter.XYs
	dashed bool
}

// lineChart renders series as SVG (or PNG when format is "png"), with the
// phases of the first mode marked as vertical lines.
func lineChart(title, ylabel string, ss []series, phases []PhaseReport, format string) ([]byte, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds since the load started"
	p.Y.Label.Text = ylabel
	p.Y.Min = 0
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	ymax := 1.0
	for _, s := range ss {
		for _, pt := range s.xy {
			ymax = max(ymax, pt.Y)
		}
	}
	for i, ph := range phases {
		if i == 0 {
			continue
		}
		l, err := plotter.NewLine(plotter.XYs{{X: ph.StartS, Y: 0}, {X: ph.StartS, Y: ymax}})
		if err != nil {
			return nil, err
		}
		l.Color = color.Gray{Y: 0x99}
		l.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
		p.Add(l)
		lab, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: ph.StartS, Y: ymax}}, Labels: []string{" " + ph.Name}})
		if err != nil {
			return nil, err
		}
		for j := range lab.TextStyle {
			lab.TextStyle[j].Color = color.Gray{Y: 0x55}
			lab.TextStyle[j].Font.Size = vg.Points(7)
		}
		p.Add(lab)
	}
	for i, s := range ss {
		if len(s.xy) == 0 {
			continue
		}
		l, err := plotter.NewLine(s.xy)
		if err != nil {
			return nil, err
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.5)
		if s.dashed {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(2)}
		}
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	p.Legend.Padding = vg.Points(2)
	w, err := p.WriterTo(9*vg.Inch, 4*vg.Inch, format)
	if err != nil {
		return nil, fmt.Errorf("chart %q: %w", title, err)
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// BacklogChart is the main chart: total backlog over time, mesh against
// baseline, phases marked.
func (rep *Report) BacklogChart(format string) ([]byte, error) {
	var ss []series
	for _, m := range rep.Modes {
		s := series{name: m.Mode + " total backlog", dashed: m.Mode == ModeBaseline}
		for _, x := range m.Series {
			s.xy = append(s.xy, plotter.XY{X: x.T, Y: float64(x.Total)})
		}
		ss = append(ss, s)
	}
	return lineChart("Backlog (ready + delayed + leased tasks), mesh vs single-host baseline", "tasks", ss, rep.firstPhases(), format)
}

// IDCBacklogChart draws one mode's backlog per IDC.
func (rep *Report) IDCBacklogChart(mode string, idcs []string, format string) ([]byte, error) {
	m := rep.mode(mode)
	if m == nil {
		return nil, fmt.Errorf("no %s mode in the report", mode)
	}
	var ss []series
	for _, idc := range idcs {
		s := series{name: idc}
		for _, x := range m.Series {
			s.xy = append(s.xy, plotter.XY{X: x.T, Y: float64(x.Backlog[idc])})
		}
		ss = append(ss, s)
	}
	return lineChart("Backlog per IDC ("+mode+")", "tasks", ss, m.Phases, format)
}

// LatencyChart draws the p99 enqueue→done latency over time per mode.
func (rep *Report) LatencyChart(format string) ([]byte, error) {
	var ss []series
	for _, m := range rep.Modes {
		s := series{name: m.Mode + " p99", dashed: m.Mode == ModeBaseline}
		for _, x := range m.Series {
			if x.P99Ms > 0 {
				s.xy = append(s.xy, plotter.XY{X: x.T, Y: x.P99Ms / 1000})
			}
		}
		ss = append(ss, s)
	}
	return lineChart("Enqueue → done latency, p99 per sample", "seconds", ss, rep.firstPhases(), format)
}

// WhereChart draws where one mode's tasks ran: completions/s by origin.
func (rep *Report) WhereChart(mode, format string) ([]byte, error) {
	m := rep.mode(mode)
	if m == nil {
		return nil, fmt.Errorf("no %s mode in the report", mode)
	}
	names := []string{"own host", "same IDC", "other IDC"}
	var ss []series
	for w, name := range names {
		s := series{name: name}
		for i := 1; i < len(m.Series); i++ {
			a, b := m.Series[i-1], m.Series[i]
			if dt := b.T - a.T; dt > 0 {
				s.xy = append(s.xy, plotter.XY{X: b.T, Y: float64(b.Where[w]-a.Where[w]) / dt})
			}
		}
		ss = append(ss, s)
	}
	return lineChart("Where tasks ran ("+mode+"), completions per second", "tasks/s", ss, m.Phases, format)
}

// WorkChart draws one mode's work per second: executions, retries among
// them, completions and backend calls (mesh-wide), with the budget if any.
func (rep *Report) WorkChart(mode string, budget float64, format string) ([]byte, error) {
	m := rep.mode(mode)
	if m == nil {
		return nil, fmt.Errorf("no %s mode in the report", mode)
	}
	counts := []struct {
		name string
		f    func(Sample) int
	}{
		{"attempts", func(x Sample) int { return x.Attempts }},
		{"retries (attempt > 1)", func(x Sample) int { return x.Retries }},
		{"done", func(x Sample) int { return x.Done }},
		{"backend calls", func(x Sample) int { return x.Calls }},
	}
	var ss []series
	for _, c := range counts {
		s := series{name: c.name}
		for i := 1; i < len(m.Series); i++ {
			a, b := m.Series[i-1], m.Series[i]
			if dt := b.T - a.T; dt > 0 {
				s.xy = append(s.xy, plotter.XY{X: b.T, Y: float64(c.f(b)-c.f(a)) / dt})
			}
		}
		ss = append(ss, s)
	}
	if budget > 0 && len(m.Series) > 0 {
		ss = append(ss, series{name: "budget", dashed: true, xy: plotter.XYs{{X: 0, Y: budget}, {X: m.Series[len(m.Series)-1].T, Y: budget}}})
	}
	return lineChart("Work per second ("+mode+"), per sample", "per second", ss, m.Phases, format)
}

func (rep *Report) mode(name string) *ModeReport {
	for i := range rep.Modes {
		if rep.Modes[i].Mode == name {
			return &rep.Modes[i]
		}
	}
	return nil
}

func (rep *Report) firstPhases() []PhaseReport {
	if len(rep.Modes) == 0 {
		return nil
	}
	return rep.Modes[0].Phases
}
