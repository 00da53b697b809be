package demo

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Dist names a latency distribution.
type Dist string

const (
	// DistFixed: always Value.
	DistFixed Dist = "fixed"
	// DistUniform: uniform between Min and Max (inclusive).
	DistUniform Dist = "uniform"
	// DistLognormal: log-normal with the given Median and P99 (the long
	// tail of a remote service), capped at Max when Max is set.
	DistLognormal Dist = "lognormal"
)

// z99 is the 99th percentile of the standard normal distribution.
const z99 = 2.3263478740408408

// Latency is a latency distribution. In YAML it is either a duration
// ("latency: 20ms", fixed) or a mapping of the fields below.
type Latency struct {
	// Dist is fixed, uniform or lognormal. Default: lognormal when Median
	// or P99 is set, uniform when Min or Max is, else fixed.
	Dist Dist `yaml:"dist"`
	// Value is the latency of fixed.
	Value time.Duration `yaml:"value"`
	// Min and Max bound uniform; Max also caps lognormal (0: no cap).
	Min time.Duration `yaml:"min"`
	Max time.Duration `yaml:"max"`
	// Median and P99 shape lognormal (0 < Median < P99).
	Median time.Duration `yaml:"median"`
	P99    time.Duration `yaml:"p99"`
}

// latencyFields is Latency without its UnmarshalYAML.
type latencyFields Latency

// UnmarshalYAML accepts a duration (fixed) or a mapping. It takes yaml's
// callback form so that the mapping is decoded by the file's own decoder,
// which keeps an unknown key an error.
func (l *Latency) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("latency %q: want a duration with a unit (20ms) or a mapping (dist, value, min, max, median, p99)", s)
		}
		*l = Latency{Dist: DistFixed, Value: d}
		return nil
	}
	var f latencyFields
	if err := unmarshal(&f); err != nil {
		return err
	}
	*l = Latency(f)
	return nil
}

// WithDefaults infers Dist when it is empty.
func (l Latency) WithDefaults() Latency {
	if l.Dist == "" {
		switch {
		case l.Median != 0 || l.P99 != 0:
			l.Dist = DistLognormal
		case l.Min != 0 || l.Max != 0:
			l.Dist = DistUniform
		default:
			l.Dist = DistFixed
		}
	}
	return l
}

// Validate checks a defaulted distribution; errors name the field (with
// the prefix "latency.").
func (l Latency) Validate() error {
	var errs []error
	bad := func(field string, d time.Duration, why string) {
		errs = append(errs, fmt.Errorf("latency.%s %s: %s", field, d, why))
	}
	unused := func(field string, d time.Duration) {
		if d != 0 {
			bad(field, d, "not used by dist "+string(l.Dist))
		}
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"value", l.Value}, {"min", l.Min}, {"max", l.Max}, {"median", l.Median}, {"p99", l.P99}} {
		if f.d < 0 {
			bad(f.name, f.d, "must not be negative")
		}
	}
	switch l.Dist {
	case DistFixed:
		unused("min", l.Min)
		unused("max", l.Max)
		unused("median", l.Median)
		unused("p99", l.P99)
	case DistUniform:
		unused("value", l.Value)
		unused("median", l.Median)
		unused("p99", l.P99)
		if l.Max < l.Min {
			bad("max", l.Max, fmt.Sprintf("must not be less than min %s", l.Min))
		}
	case DistLognormal:
		unused("value", l.Value)
		unused("min", l.Min)
		if l.Median <= 0 {
			bad("median", l.Median, "must be positive")
		}
		if l.P99 <= l.Median {
			bad("p99", l.P99, fmt.Sprintf("must be greater than median %s", l.Median))
		}
		if l.Max != 0 && l.Max < l.P99 {
			bad("max", l.Max, fmt.Sprintf("caps the tail: must not be less than p99 %s (0: no cap)", l.P99))
		}
	default:
		errs = append(errs, fmt.Errorf("latency.dist %q: want fixed, uniform or lognormal", l.Dist))
	}
	return errors.Join(errs...)
}

// Sample draws one latency from a defaulted, valid distribution.
func (l Latency) Sample(rng *rand.Rand) time.Duration {
	switch l.Dist {
	case DistUniform:
		if l.Max <= l.Min {
			return l.Min
		}
		return l.Min + time.Duration(rng.Int64N(int64(l.Max-l.Min)+1))
	case DistLognormal:
		mu := math.Log(float64(l.Median))
		sigma := (math.Log(float64(l.P99)) - mu) / z99
		x := math.Exp(mu + sigma*rng.NormFloat64())
		switch {
		case l.Max > 0 && x > float64(l.Max):
			return l.Max
		case x >= math.MaxInt64: // a far tail with a huge p99/median ratio
			return math.MaxInt64
		}
		return time.Duration(x)
	}
	return l.Value
}

// String describes the distribution ("lognormal median 20ms p99 200ms").
func (l Latency) String() string {
	switch l.Dist {
	case DistUniform:
		return fmt.Sprintf("uniform %s..%s", l.Min, l.Max)
	case DistLognormal:
		s := fmt.Sprintf("lognormal median %s p99 %s", l.Median, l.P99)
		if l.Max > 0 {
			s += fmt.Sprintf(" max %s", l.Max)
		}
		return s
	}
	return fmt.Sprintf("fixed %s", l.Value)
}
