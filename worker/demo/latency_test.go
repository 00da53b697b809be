package demo

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func seeded(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }

// samples draws n latencies, sorted.
func samples(l Latency, seed uint64, n int) []time.Duration {
	rng := seeded(seed)
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = l.Sample(rng)
	}
	slices.Sort(out)
	return out
}

// quantile of sorted samples (nearest rank).
func quantile(s []time.Duration, q float64) time.Duration {
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func mean(s []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return sum / time.Duration(len(s))
}

func within(got, want time.Duration, tol float64) bool {
	return float64(got) >= float64(want)*(1-tol) && float64(got) <= float64(want)*(1+tol)
}

func TestLatencyDistributions(t *testing.T) {
	const n = 10000
	for _, tc := range []struct {
		name     string
		l        Latency
		lo, hi   time.Duration // every sample within [lo, hi]
		wantMean time.Duration // 0: not checked
		median   time.Duration // 0: not checked
		p99      time.Duration // 0: not checked
	}{
		{name: "fixed", l: Latency{Value: 7 * time.Millisecond}, lo: 7 * time.Millisecond, hi: 7 * time.Millisecond},
		{name: "fixed zero", l: Latency{}, lo: 0, hi: 0},
		{name: "uniform", l: Latency{Min: 10 * time.Millisecond, Max: 30 * time.Millisecond},
			lo: 10 * time.Millisecond, hi: 30 * time.Millisecond, wantMean: 20 * time.Millisecond, median: 20 * time.Millisecond},
		{name: "uniform degenerate", l: Latency{Dist: DistUniform, Min: time.Second, Max: time.Second}, lo: time.Second, hi: time.Second},
		{name: "lognormal", l: Latency{Median: 20 * time.Millisecond, P99: 200 * time.Millisecond},
			lo: 1, hi: time.Hour, median: 20 * time.Millisecond, p99: 200 * time.Millisecond},
		{name: "lognormal narrow", l: Latency{Dist: DistLognormal, Median: 100 * time.Millisecond, P99: 120 * time.Millisecond},
			lo: 50 * time.Millisecond, hi: 200 * time.Millisecond, median: 100 * time.Millisecond, p99: 120 * time.Millisecond},
		{name: "lognormal capped", l: Latency{Median: 10 * time.Millisecond, P99: 100 * time.Millisecond, Max: 150 * time.Millisecond},
			lo: 1, hi: 150 * time.Millisecond, median: 10 * time.Millisecond, p99: 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.l.WithDefaults()
			if err := l.Validate(); err != nil {
				t.Fatal(err)
			}
			for _, seed := range []uint64{1, 2, 42} {
				s := samples(l, seed, n)
				if s[0] < tc.lo || s[n-1] > tc.hi {
					t.Fatalf("seed %d: samples span %s..%s, want within %s..%s", seed, s[0], s[n-1], tc.lo, tc.hi)
				}
				if tc.wantMean != 0 && !within(mean(s), tc.wantMean, 0.05) {
					t.Errorf("seed %d: mean %s, want %s ±5%%", seed, mean(s), tc.wantMean)
				}
				if tc.median != 0 && !within(quantile(s, 0.5), tc.median, 0.1) {
					t.Errorf("seed %d: median %s, want %s ±10%%", seed, quantile(s, 0.5), tc.median)
				}
				if tc.p99 != 0 && !within(quantile(s, 0.99), tc.p99, 0.2) {
					t.Errorf("seed %d: p99 %s, want %s ±20%%", seed, quantile(s, 0.99), tc.p99)
				}
			}
		})
	}
}

func TestLatencySeeded(t *testing.T) {
	l := Latency{Median: time.Millisecond, P99: 50 * time.Millisecond}.WithDefaults()
	a, b, c := samples(l, 7, 1000), samples(l, 7, 1000), samples(l, 8, 1000)
	if !slices.Equal(a, b) {
		t.Fatal("one seed gave two sequences")
	}
	if slices.Equal(a, c) {
		t.Fatal("two seeds gave one sequence")
	}
}

func TestLatencyInference(t *testing.T) {
	for _, tc := range []struct {
		l    Latency
		want Dist
	}{
		{Latency{}, DistFixed},
		{Latency{Value: time.Second}, DistFixed},
		{Latency{Max: time.Second}, DistUniform},
		{Latency{P99: time.Second}, DistLognormal},
		{Latency{Median: time.Millisecond, Max: time.Second}, DistLognormal},
		{Latency{Dist: DistUniform}, DistUniform},
	} {
		if got := tc.l.WithDefaults().Dist; got != tc.want {
			t.Errorf("%+v: dist %s, want %s", tc.l, got, tc.want)
		}
	}
}

func TestLatencyValidate(t *testing.T) {
	for _, tc := range []struct {
		l    Latency
		want string // "" = valid
	}{
		{Latency{Value: 5 * time.Millisecond}, ""},
		{Latency{Value: -time.Millisecond}, "latency.value -1ms: must not be negative"},
		{Latency{Dist: DistFixed, Value: time.Millisecond, Max: time.Second}, "latency.max 1s: not used by dist fixed"},
		{Latency{Min: 2 * time.Second, Max: time.Second}, "latency.max 1s: must not be less than min 2s"},
		{Latency{Min: -time.Second, Max: time.Second}, "latency.min -1s: must not be negative"},
		{Latency{Dist: DistUniform, Min: time.Millisecond, Max: time.Second, P99: time.Second}, "latency.p99 1s: not used by dist uniform"},
		{Latency{Median: time.Second, P99: time.Second}, "latency.p99 1s: must be greater than median 1s"},
		{Latency{P99: time.Second}, "latency.median 0s: must be positive"},
		{Latency{Median: time.Millisecond, P99: time.Second, Max: 500 * time.Millisecond}, "latency.max 500ms: caps the tail"},
		{Latency{Median: time.Millisecond, P99: time.Second, Value: time.Second}, "latency.value 1s: not used by dist lognormal"},
		{Latency{Dist: "gamma"}, `latency.dist "gamma": want fixed, uniform or lognormal`},
	} {
		err := tc.l.WithDefaults().Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.l, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want %q", tc.l, err, tc.want)
		}
	}
}

// decodeStrict decodes YAML as the worker's config loader does.
func decodeStrict(text string, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader([]byte(text)))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func TestLatencyYAML(t *testing.T) {
	var s struct {
		A Latency `yaml:"a"`
		B Latency `yaml:"b"`
	}
	if err := decodeStrict("a: 20ms\nb: {median: 5ms, p99: 50ms, max: 1s}\n", &s); err != nil {
		t.Fatal(err)
	}
	if s.A != (Latency{Dist: DistFixed, Value: 20 * time.Millisecond}) {
		t.Fatalf("a = %+v", s.A)
	}
	if b := s.B.WithDefaults(); b.Dist != DistLognormal || b.Median != 5*time.Millisecond || b.P99 != 50*time.Millisecond || b.Max != time.Second {
		t.Fatalf("b = %+v", b)
	}
	for text, want := range map[string]string{
		"a: 20":                      "want a duration with a unit",
		"a: soon":                    "want a duration with a unit",
		"a: {median: 5ms, p95: 9ms}": "field p95 not found",
		"a: {min: 5}":                "cannot unmarshal",
	} {
		if err := decodeStrict(text, &s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", text, err, want)
		}
	}
}
