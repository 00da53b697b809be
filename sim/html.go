package sim

import (
	"fmt"
	"html/template"
	"io"
)

var page = template.Must(template.New("report").Funcs(template.FuncMap{"pct": pct}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mqmesh sim: {{.Scenario}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.bad{color:#b00;font-weight:bold} .ok{color:#070}
figure{margin:1.5em 0} svg{max-width:100%;height:auto}
</style></head><body>
<h1>mqmesh simulation: {{.Scenario}}</h1>
<p>Seed {{.Seed}}. Every mode runs the same scenario on the real components in one process: embedded NATS servers with routes and gateways, Badger stores, memberlist, backlog publishers and views, worker pools.
The <b>baseline</b> pulls only its own node (the single-host design the mesh replaces); <b>unthrottled</b> is the mesh with every node's overload protection off.</p>
{{range .Modes}}<p><b>{{.Mode}}</b>: {{.Enqueued}} enqueued, {{.Completed}} completed,
<span class="{{if .Lost}}bad{{else}}ok{{end}}">{{.Lost}} lost</span>, {{.Stranded}} stranded on dead nodes, {{if .StillQueued}}<span class="bad">{{.StillQueued}} still queued</span>, {{end}}{{.Duplicates}} duplicate deliveries;
peak backlog {{.PeakBacklog}}; {{if .Drained}}drained {{printf "%.1f" .DrainedAfterS}} s after the load{{else}}<span class="bad">not drained</span>{{end}}.
{{with .Deploy}}Bad deploy: {{.BadAcked}} tasks acked without the work; replay re-enqueued {{.Replayed}}, <span class="{{if lt .Repaired .BadAcked}}bad{{else}}ok{{end}}">repairing {{.Repaired}}</span>.{{end}}</p>
{{end}}
<table><tr><th class="l">mode</th><th class="l">phase</th><th>time s</th><th>done/s</th><th>p50 ms</th><th>p99 ms</th><th>p999 ms</th><th>peak backlog</th><th>end backlog</th><th>drained after s</th><th>local</th><th>same IDC</th><th>other IDC</th><th>notices/worker/s</th></tr>
{{range $m := .Modes}}{{range .Phases}}<tr><td class="l">{{$m.Mode}}</td><td class="l">{{.Name}}</td><td>{{printf "%.1f–%.1f" .StartS .EndS}}</td><td>{{printf "%.0f" .Throughput}}</td><td>{{printf "%.1f" .P50Ms}}</td><td>{{printf "%.1f" .P99Ms}}</td><td>{{printf "%.1f" .P999Ms}}</td><td>{{.PeakBacklog}}</td><td>{{.EndBacklog}}</td><td>{{if ge .DrainS 0.0}}{{printf "%.1f" .DrainS}}{{else}}never{{end}}</td><td>{{pct .Local}}</td><td>{{pct .SameIDC}}</td><td>{{pct .OtherIDC}}</td><td>{{printf "%.2f" .NoticesPerWorker}}</td></tr>
{{end}}{{end}}</table>
<p>What the nodes' throttles act on. Attempts are executions, retries those after a task's first delivery; backend calls are mesh-wide;
retries deferred are those a retry gate put back on disk (not lost); enqueue latency times the producers' Enqueue calls;
min node share is the least progress of a node relative to the mean (1 = every node equal); cpu is the CPU usage as the CPU throttle's sampler reads it (this machine's, by default),
cpu limit the nodes' summed CPU dispatch limit while one was active.</p>
<table><tr><th class="l">mode</th><th class="l">phase</th><th>time s</th><th>attempts/s</th><th>retries/s</th><th>done/s</th><th>backend calls/s</th><th>retries deferred/s</th><th>enqueue p50 ms</th><th>enqueue p99 ms</th><th>min node share</th><th>cpu</th><th>cpu limit/s</th></tr>
{{range $m := .Modes}}{{range .Phases}}<tr><td class="l">{{$m.Mode}}</td><td class="l">{{.Name}}</td><td>{{printf "%.1f–%.1f" .StartS .EndS}}</td><td>{{printf "%.0f" .AttemptsPerS}}</td><td>{{printf "%.1f" .RetriesPerS}}</td><td>{{printf "%.0f" .Throughput}}</td><td>{{printf "%.0f" .CallsPerS}}</td><td>{{printf "%.1f" .DeferredPerS}}</td><td>{{printf "%.1f" .EnqueueP50Ms}}</td><td>{{printf "%.1f" .EnqueueP99Ms}}</td><td>{{printf "%.2f" .MinNodeShare}}</td><td>{{pct .CPU}}</td><td>{{if gt .CPULimit 0.0}}{{printf "%.0f" .CPULimit}}{{else}}–{{end}}</td></tr>
{{end}}{{end}}</table>
{{range $m := .Modes}}{{range .Outages}}<p><b>{{$m.Mode}}</b>: backend down {{printf "%.1f–%.1f" .DownS .UpS}} s: {{printf "%.0f" .BeforePerS}} done/s before; while down {{printf "%.0f" .AttemptsPerS}} attempts/s, {{printf "%.1f" .RetriesPerS}} retries/s ({{printf "%.2f" .RetryRatio}}× the throughput before; {{printf "%.1f" .LaterRetriesPerS}}/s after its first second);
{{if ge .RecoveredAfterS 0.0}}back to 90% of it {{printf "%.2f" .RecoveredAfterS}} s after the backend came back{{else}}<span class="bad">never back to 90% of it</span>{{end}},
{{if ge .ClearedAfterS 0.0}}failed tasks cleared {{printf "%.2f" .ClearedAfterS}} s after{{else}}<span class="bad">failed tasks never cleared</span>{{end}}.</p>
{{end}}{{with .Budget}}<p><b>{{$m.Mode}}</b>: budget {{.Backend}} {{printf "%.0f" .Budget}} calls/s:
{{if ge .ConvergedS 0.0}}within ±10% from {{printf "%.1f" .ConvergedS}} s after the load started (every 1 s window to its end){{else}}never within ±10% to the end of the load{{end}};
{{printf "%.0f" .CallsPerS}} calls/s mean since; least node progress {{printf "%.2f" .MinNodeShare}} of the mean.</p>
{{end}}{{end}}
{{range .Charts}}<figure>{{.}}</figure>
{{end}}
<p>Time series: the CSV file written beside this report.</p>
</body></html>
`))

func pct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

// WriteHTML writes a self-contained report: summary, phase table and SVG
// charts inline.
func (rep *Report) WriteHTML(w io.Writer, idcs []string) error {
	var charts []template.HTML
	add := func(b []byte, err error) error {
		if err != nil {
			return err
		}
		charts = append(charts, template.HTML(b)) // our own SVG
		return nil
	}
	if err := add(rep.BacklogChart("svg")); err != nil {
		return err
	}
	for _, m := range rep.Modes {
		if err := add(rep.IDCBacklogChart(m.Mode, idcs, "svg")); err != nil {
			return err
		}
	}
	if err := add(rep.LatencyChart("svg")); err != nil {
		return err
	}
	for _, m := range rep.Modes {
		if err := add(rep.WhereChart(m.Mode, "svg")); err != nil {
			return err
		}
	}
	for _, m := range rep.Modes {
		var budget float64
		if m.Budget != nil {
			budget = m.Budget.Budget
		}
		if err := add(rep.WorkChart(m.Mode, budget, "svg")); err != nil {
			return err
		}
	}
	return page.Execute(w, struct {
		*Report
		Charts []template.HTML
	}{rep, charts})
}
