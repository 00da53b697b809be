package worker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/mqmesh/mqmesh/backlog"
)

var epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// TestSchedulerScenarios runs the scenario scripts in testdata/scheduler
// (datadriven, as etcd-io/raft's interaction tests; rewrite the expected
// output with -rewrite). Commands:
//
//	init idc=sh node=n1 [jitter=20ms] [local-only]
//	tasks n=N ok=F took=D   N handler outcomes, a share F of them done
//	view                 one entry per line: IDC NODE QUEUE READY [age=D] [oldest=D] [corrected] [level=N] [rate=R]
//	next t=D [free=N] [queue=q]
//	observe id=N t=D [got=N] [err] [ready-after=N] [throttled=D]
func TestSchedulerScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata/scheduler", func(t *testing.T, path string) {
		var s *Scheduler
		var view []backlog.Entry
		acts := map[uint64]Action{}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			args := map[string]string{}
			for _, a := range d.CmdArgs {
				args[a.Key] = strings.Join(a.Vals, ",")
			}
			dur := func(k string) time.Duration {
				if args[k] == "" {
					return 0
				}
				v, err := time.ParseDuration(args[k])
				if err != nil {
					d.Fatalf(t, "%s: %v", k, err)
				}
				return v
			}
			num := func(k string, def int) int {
				if args[k] == "" {
					return def
				}
				v, err := strconv.Atoi(args[k])
				if err != nil {
					d.Fatalf(t, "%s: %v", k, err)
				}
				return v
			}
			_, has := args["err"]
			switch d.Cmd {
			case "init":
				pol := PolicyConfig{Jitter: dur("jitter")}
				if pol.Jitter == 0 {
					pol.Jitter = -1
				}
				_, pol.LocalOnly = args["local-only"]
				s = NewScheduler(SchedulerConfig{IDC: args["idc"], Node: args["node"], Policy: pol, Rand: rand.New(rand.NewPCG(1, 2))})
				view, acts = nil, map[uint64]Action{}
				return ""
			case "view":
				view = nil
				for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
					f := strings.Fields(line)
					if len(f) < 4 {
						continue
					}
					ready, _ := strconv.ParseUint(f[3], 10, 64)
					e := backlog.Entry{IDC: f[0], Node: f[1], Queue: f[2], Ready: ready, Level: 1, Updated: epoch}
					for _, opt := range f[4:] {
						k, v, _ := strings.Cut(opt, "=")
						switch k {
						case "age":
							a, _ := time.ParseDuration(v)
							e.Updated = epoch.Add(-a)
						case "oldest":
							e.OldestReady, _ = time.ParseDuration(v)
						case "corrected":
							e.Corrected = true
						case "level":
							l, _ := strconv.Atoi(v)
							e.Level = uint32(l)
						case "rate":
							e.EnqueueRate, _ = strconv.ParseFloat(v, 64)
						}
					}
					view = append(view, e)
				}
				return fmt.Sprintf("%d entries", len(view))
			case "next":
				q := args["queue"]
				if q == "" {
					q = "q"
				}
				// Entry ages are relative to t=0: shift them with the clock.
				now := epoch.Add(dur("t"))
				var b strings.Builder
				for _, a := range s.Next(now, q, view, num("free", 8)) {
					acts[a.ID] = a
					fmt.Fprintf(&b, "%s\n", fmtAction(a))
				}
				return b.String()
			case "tasks":
				ok, _ := strconv.ParseFloat(args["ok"], 64)
				n, done := num("n", 1), 0
				for i := range n {
					good := float64(done) < ok*float64(i+1)
					if good {
						done++
					}
					s.ObserveTask("q", good, dur("took"))
				}
				return fmt.Sprintf("degraded=%v\n", s.Degraded("q"))
			case "observe":
				a, ok := acts[uint64(num("id", 0))]
				if !ok {
					d.Fatalf(t, "no action %s", args["id"])
				}
				r := PullResult{Action: a, Got: num("got", 0), ReadyAfter: uint64(num("ready-after", 0)), Throttled: dur("throttled")}
				if has {
					r.Err = errors.New("unreachable")
				}
				if back := s.Observe(r, epoch.Add(dur("t"))); back > 0 {
					return fmt.Sprintf("avoid %s/%s for %s\n", a.IDC, a.Node, back)
				}
				return "ok\n"
			}
			d.Fatalf(t, "unknown command %s", d.Cmd)
			return ""
		})
	})
}

func fmtAction(a Action) string {
	if a.Where == Nowhere {
		return fmt.Sprintf("idle %s slots=%d", a.Wait, a.Slots)
	}
	s := fmt.Sprintf("#%d %s %s/%s max=%d slots=%d", a.ID, a.Where, a.IDC, a.Node, a.MaxTasks, a.Slots)
	if a.Wait > 0 {
		s += " wait=" + a.Wait.String()
	}
	if a.Delay > 0 {
		s += " delay=" + a.Delay.String()
	}
	if a.Parked {
		s += " parked"
	}
	return s
}
