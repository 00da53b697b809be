package bench

import (
	"bytes"
	"strings"
	"testing"
)

// A tiny `bench cpu` run: both modes, every phase, a well-formed report.
// Nothing here depends on how fast anything was.
func TestCPUShortRun(t *testing.T) {
	dir := t.TempDir()
	out, logs, err := runCommand(t, "cpu", "--rate", "50", "--warmup", "0s", "--before", "600ms", "--hog", "600ms",
		"--after", "600ms", "--burn", "1ms", "--hogs", "1", "--slots", "2", "--sample", "100ms", "--durability", "async",
		"--json", "--dir", dir)
	if err != nil {
		t.Fatalf("bench cpu: %v\nstderr:\n%s", err, logs)
	}
	r := decodeStrict[CPUReport](t, out)
	if r.Schema != CPUReportSchema || !r.OK || r.Config.RatePerS != 50 || r.Config.Hogs != 1 || r.Config.Slots != 2 ||
		r.Config.BurnIters <= 0 || r.Config.Durability != "async" || r.Config.HogSession != "own" {
		t.Fatalf("report header: %+v", r)
	}
	if len(r.Modes) != 2 || r.Modes[0].Throttle != "on" || r.Modes[1].Throttle != "off" {
		t.Fatalf("modes: %+v", r.Modes)
	}
	for _, m := range r.Modes {
		if m.Error != "" || len(m.Phases) != 3 || len(m.Samples) == 0 {
			t.Fatalf("throttle %s: %+v", m.Throttle, m)
		}
		for i, want := range []string{"before", "hog", "after"} {
			p := m.Phases[i]
			if p.Phase != want || p.DurationS <= 0 || p.Enqueues == 0 || p.EnqueueErrors != 0 {
				t.Errorf("throttle %s phase %d: %+v", m.Throttle, i, p)
			}
			if p.EnqueueP50Ms <= 0 || p.EnqueueP50Ms > p.EnqueueP99Ms || p.EnqueueP99Ms > p.EnqueueP999Ms || p.EnqueueP999Ms > p.EnqueueMaxMs {
				t.Errorf("throttle %s %s: percentiles out of order: %+v", m.Throttle, want, p)
			}
			if p.HostCPU <= 0 || p.HostCPU > 1 {
				t.Errorf("throttle %s %s: host cpu %v", m.Throttle, want, p.HostCPU)
			}
		}
		if procAvailable() && m.Phases[1].HogCores <= 0 {
			t.Errorf("throttle %s: the hog used no CPU: %+v", m.Throttle, m.Phases[1])
		}
		for _, s := range m.Samples {
			if s.ThrottleReason == "" || (m.Throttle == "off" && (s.ThrottleActive || s.ThrottleReason != "disabled")) {
				t.Errorf("throttle %s: sample %+v", m.Throttle, s)
			}
		}
	}
	if r.Ratio == nil || r.Ratio.HogEnqueueP99 <= 0 {
		t.Errorf("ratio: %+v", r.Ratio)
	}
	for _, want := range []string{"throttle on: phase hog", "throttle off: starting the hog"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %q in the progress on stderr:\n%s", want, logs)
		}
	}
	var table bytes.Buffer
	if err := writeCPUTable(&table, &r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p99 ms", "dispatch/s", "ratio on/off during the hog", "- off hog:"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	assertEmptyDir(t, dir)
}

// A tiny burst drain (--burst): every mode drains every task and reports
// a rate; the table compares on with off.
func TestCPUBurstShortRun(t *testing.T) {
	dir := t.TempDir()
	out, logs, err := runCommand(t, "cpu", "--burst", "60", "--warmup", "200ms", "--burn", "1ms", "--hogs", "1", "--slots", "2",
		"--sample", "100ms", "--durability", "async", "--modes", "on,off,host", "--json", "--dir", dir)
	if err != nil {
		t.Fatalf("bench cpu --burst: %v\nstderr:\n%s", err, logs)
	}
	r := decodeStrict[CPUReport](t, out)
	if !r.OK || r.Config.Burst != 60 || len(r.Bursts) != 3 || len(r.Modes) != 0 {
		t.Fatalf("report: %+v", r)
	}
	for i, want := range []string{"on", "off", "host"} {
		b := r.Bursts[i]
		if b.Throttle != want || b.Error != "" || b.Tasks != 60 || b.DrainS <= 0 || b.RatePerS <= 0 || b.ThrottleReason == "" {
			t.Errorf("burst %d: %+v", i, b)
		}
	}
	var table bytes.Buffer
	if err := writeCPUTable(&table, &r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "ratio on/off") {
		t.Errorf("table lacks the ratio:\n%s", table.String())
	}
	assertEmptyDir(t, dir)
}

// Bad flags fail before anything starts, with an error naming the flag.
func TestCPURejectsBadFlags(t *testing.T) {
	for flag, value := range map[string]string{
		"--rate": "0", "--modes": "maybe", "--durability": "never", "--hog": "0s", "--handler-load": "0", "--hogs": "-1", "--hog-session": "everyone", "--burst": "-1",
	} {
		_, _, err := runCommand(t, "cpu", flag, value)
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s %s: error %v, want one naming %s", flag, value, err, flag)
		}
	}
}
