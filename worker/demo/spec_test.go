package demo

import (
	"strings"
	"testing"
	"time"
)

func TestSpecValidate(t *testing.T) {
	fan := func(q string, n, max int) *Fanout { return &Fanout{Queue: q, Count: n, MaxCount: max} }
	for _, tc := range []struct {
		name string
		s    Spec
		want []string // nil = valid
	}{
		{"sleep", Spec{Kind: KindSleep, Latency: Latency{Value: time.Millisecond}}, nil},
		{"flaky", Spec{Kind: KindFlaky, ErrorRate: 0.5, GiveUpRate: 0.5}, nil},
		{"fanout", Spec{Kind: KindFanout, Fanout: fan("push", 3, 0)}, nil},
		{"slowdown", Spec{Kind: KindSleep, Slowdown: map[string]Slowdown{"east": {ErrorRate: 0.2}}}, nil},
		{"no kind", Spec{}, []string{"kind: required"}},
		{"unknown kind", Spec{Kind: "grouped"}, []string{`kind "grouped": want sleep, flaky or fanout`}},
		{"negative rate", Spec{Kind: KindFlaky, ErrorRate: -0.1}, []string{"error_rate -0.1: must be between 0 and 1"}},
		{"rate above 1", Spec{Kind: KindFlaky, GiveUpRate: 1.5}, []string{"give_up_rate 1.5: must be between 0 and 1"}},
		{"rates sum above 1", Spec{Kind: KindFlaky, ErrorRate: 0.7, GiveUpRate: 0.4}, []string{"error_rate 0.7 + give_up_rate 0.4: more than 1"}},
		{"rate on sleep", Spec{Kind: KindSleep, ErrorRate: 0.1}, []string{"error_rate: only for kind flaky"}},
		{"fanout missing", Spec{Kind: KindFanout}, []string{"fanout: required for kind fanout"}},
		{"fanout on flaky", Spec{Kind: KindFlaky, Fanout: fan("q", 1, 0)}, []string{"fanout: only for kind fanout"}},
		{"fanout bad", Spec{Kind: KindFanout, Fanout: &Fanout{Queue: "a.>", Count: 0, Delay: -time.Second}},
			[]string{"fanout.queue: invalid name", "fanout.count 0: want 1..1000", "fanout.delay -1s"}},
		{"fanout no queue", Spec{Kind: KindFanout, Fanout: fan("", 1, 0)}, []string{"fanout.queue: required"}},
		{"fanout too many", Spec{Kind: KindFanout, Fanout: fan("q", 10, MaxFanout+1)}, []string{"fanout.max_count 1001: want count (10)..1000"}},
		{"fanout max below count", Spec{Kind: KindFanout, Fanout: fan("q", 10, 5)}, []string{"fanout.max_count 5"}},
		{"slowdown bad", Spec{Kind: KindSleep, Slowdown: map[string]Slowdown{"a b": {LatencyFactor: -2, ErrorRate: 2}}},
			[]string{"slowdown.a b: invalid name", "slowdown.a b.latency_factor -2: must be positive", "slowdown.a b.error_rate 2"}},
		{"negative durations", Spec{Kind: KindFlaky, RetryDelay: -time.Second, Timeout: -time.Second, Latency: Latency{Value: -1}},
			[]string{"retry_delay -1s", "timeout -1s", "latency.value -1ns"}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkErr(t, tc.s.WithDefaults().Validate(), tc.want) })
	}
}

func TestQueuesValidate(t *testing.T) {
	sleep := Spec{Kind: KindSleep}
	fan := func(to string) Spec { return Spec{Kind: KindFanout, Fanout: &Fanout{Queue: to, Count: 2}} }
	for _, tc := range []struct {
		name string
		q    Queues
		want []string
	}{
		{"ok", Queues{"push": sleep, "group": fan("push"), "outer": fan("group"), "elsewhere": fan("other-pool")}, nil},
		{"empty", Queues{}, []string{"queues: none configured"}},
		{"field named", Queues{"push": {Kind: KindFlaky, ErrorRate: -0.5, Latency: Latency{Min: 2, Max: 1}}},
			[]string{"queues.push.error_rate -0.5: must be between 0 and 1", "queues.push.latency.max 1ns"}},
		{"bad name", Queues{"a.b": sleep}, []string{`queues.a.b: invalid name: queue "a.b"`}},
		{"self cycle", Queues{"g": fan("g")}, []string{"queues.g.fanout.queue: fanouts form a cycle (g -> g)"}},
		{"long cycle", Queues{"a": fan("b"), "b": fan("c"), "c": fan("a"), "push": sleep}, []string{"cycle (a -> b -> c -> a)"}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkErr(t, tc.q.WithDefaults().Validate(), tc.want) })
	}
}

func TestSpecYAMLStrict(t *testing.T) {
	var q map[string]Spec
	text := `
push:
  kind: sleep
  latency: {median: 20ms, p99: 200ms}
  slowdown:
    east: {latency_factor: 4, error_rate: 0.25}
group:
  kind: fanout
  fanout: {queue: push, count: 3, max_count: 5, delay: 1s}
`
	if err := decodeStrict(text, &q); err != nil {
		t.Fatal(err)
	}
	if err := Queues(q).WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
	if sd := q["push"].Slowdown["east"]; sd.LatencyFactor != 4 || sd.ErrorRate != 0.25 {
		t.Fatalf("slowdown %+v", sd)
	}
	if f := q["group"].Fanout; f.Queue != "push" || f.Count != 3 || f.MaxCount != 5 || f.Delay != time.Second {
		t.Fatalf("fanout %+v", f)
	}
	if err := decodeStrict("push: {kind: sleep, error_rat: 0.1}", &q); err == nil || !strings.Contains(err.Error(), "field error_rat not found") {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestSeedFor(t *testing.T) {
	if SeedFor(0, "push") != 0 {
		t.Fatal("seed 0 must stay random")
	}
	a, b := SeedFor(42, "push"), SeedFor(42, "email")
	if a == 0 || b == 0 || a == b || a != SeedFor(42, "push") {
		t.Fatalf("derived seeds %d %d", a, b)
	}
}

// checkErr checks that err is nil when want is, else that it contains
// every string of want.
func checkErr(t *testing.T, err error, want []string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestBackendSpec(t *testing.T) {
	ok := Spec{Kind: KindSleep, Backend: &Backend{Name: "user-db"}}.WithDefaults()
	if err := ok.Validate(); err != nil || ok.Backend.Calls != 1 {
		t.Fatalf("backend with default calls: %v, %+v", err, ok.Backend)
	}
	for _, tc := range []struct {
		b    Backend
		want string
	}{{Backend{Name: "user.db", Calls: 1}, "backend.name"}, {Backend{Calls: 2}, "backend.name"}, {Backend{Name: "db", Calls: -1}, "backend.calls"}, {Backend{Name: "db", Calls: MaxBackendCalls + 1}, "backend.calls"}} {
		err := Spec{Kind: KindSleep, Backend: &tc.b}.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error naming %s", tc.b, err, tc.want)
		}
	}
}
