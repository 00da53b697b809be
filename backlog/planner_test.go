package backlog

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/mqmesh/mqmesh/mqnode"
)

// TestPlannerScenarios runs the scripts in testdata/planner (datadriven;
// rewrite the expected output with -rewrite). Commands:
//
//	init [idc=sh] [node=n1]
//	tick t=D             one queue per line: QUEUE READY [total=N] [oldest=D]
//	sync tier=T
//
// tick prints the notices sent: tier, queue, ready, level, heartbeat, and
// the rates they carry.
func TestPlannerScenarios(t *testing.T) {
	epoch := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	datadriven.Walk(t, "testdata/planner", func(t *testing.T, path string) {
		var p *Planner
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			args := map[string]string{}
			for _, a := range d.CmdArgs {
				args[a.Key] = strings.Join(a.Vals, ",")
			}
			switch d.Cmd {
			case "init":
				p = NewPlanner(PlannerConfig{IDC: "sh", Node: "n1", Incarnation: 1})
				return ""
			case "sync":
				tier, err := ParseTier(args["tier"])
				if err != nil {
					d.Fatalf(t, "%v", err)
				}
				p.RequestSync(tier)
				return ""
			case "tick":
				at, err := time.ParseDuration(args["t"])
				if err != nil {
					d.Fatalf(t, "t: %v", err)
				}
				var levels []mqnode.QueueLevel
				for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
					f := strings.Fields(line)
					if len(f) < 2 {
						continue
					}
					ql := mqnode.QueueLevel{Queue: f[0]}
					ql.Ready, _ = strconv.ParseUint(f[1], 10, 64)
					for _, opt := range f[2:] {
						k, v, _ := strings.Cut(opt, "=")
						switch k {
						case "total":
							ql.EnqueuedTotal, _ = strconv.ParseUint(v, 10, 64)
						case "oldest":
							ql.OldestReady, _ = time.ParseDuration(v)
						}
					}
					levels = append(levels, ql)
				}
				var b strings.Builder
				for _, n := range p.Tick(levels, epoch.Add(at)) {
					m := n.Msg
					if m.Queue == HeartbeatQueue {
						fmt.Fprintf(&b, "%s heartbeat seq=%d\n", n.Tier, m.Seq)
						continue
					}
					fmt.Fprintf(&b, "%s %s ready=%d level=%d", n.Tier, m.Queue, m.Ready, m.Level)
					if m.Heartbeat {
						b.WriteString(" refresh")
					}
					fmt.Fprintf(&b, " in=%.0f/s out=%.0f/s seq=%d\n", m.EnqueueRate, m.DrainRate, m.Seq)
				}
				if b.Len() == 0 {
					return "nothing\n"
				}
				return b.String()
			}
			d.Fatalf(t, "unknown command %s", d.Cmd)
			return ""
		})
	})
}
