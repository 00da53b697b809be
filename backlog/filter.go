package backlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// TierSpec is one tier of a filter file.
type TierSpec struct {
	// Subject is the subscription pattern; {idc} and {node} stand for the
	// worker's own IDC and node, so one file serves every host.
	Subject string `yaml:"subject"`
	// MinBacklog: notices of fewer ready tasks count as no backlog.
	MinBacklog uint64 `yaml:"min_backlog"`
	// MaxRate caps the notices per second accepted on this tier (0: none).
	MaxRate float64 `yaml:"max_rate"`
	// StaleAfter expires entries not refreshed for this long. Default:
	// 3 × the publisher's default heartbeat of the tier.
	StaleAfter time.Duration `yaml:"stale_after"`
	// Shards is the number of summary shards of every IDC (global tier
	// only, with a summary subject bls.*.{shard}): {shard} stands for this
	// worker's shard among them. It must equal the nodes' summary shards
	// (SummaryConfig.Shards; 1 on nodes started by mesh). Default 1.
	Shards int `yaml:"shards"`
}

// Filters is a worker's subscription filter: at most one spec per tier
// (keys local, idc, global). A tier left out is not subscribed.
type Filters struct {
	Tiers map[string]TierSpec `yaml:"tiers"`
}

// DefaultFilters hears the host tier and the IDC tier (local + IDC).
func DefaultFilters() Filters {
	return Filters{Tiers: map[string]TierSpec{
		"local": {Subject: "bl.h.{idc}.{node}.>"},
		"idc":   {Subject: "bl.i.{idc}.>"},
	}}
}

// LoadFilters reads a filter file strictly (unknown keys are errors).
func LoadFilters(path string) (Filters, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Filters{}, fmt.Errorf("filter file: %w", err)
	}
	f, err := ParseFilters(b)
	if err != nil {
		return Filters{}, fmt.Errorf("filter file %s: %w", path, err)
	}
	return f, nil
}

// ParseFilters decodes a filter document strictly.
func ParseFilters(b []byte) (Filters, error) {
	var f Filters
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return Filters{}, err
	}
	if len(f.Tiers) == 0 {
		return Filters{}, errors.New("no tiers: a filter must subscribe to at least one tier")
	}
	return f, nil
}

// tierSub is a resolved tier subscription.
type tierSub struct {
	tier    Tier
	pattern Pattern
	filter  TierFilter
}

// resolve substitutes the worker's IDC and node and validates every tier.
// node may be empty for a worker-only host, whose local tier is then an
// error.
func (f Filters) resolve(idc, node string) ([]tierSub, error) {
	var out []tierSub
	var errs []error
	for name, spec := range f.Tiers {
		t, err := ParseTier(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("tiers.%s: %w", name, err))
			continue
		}
		if spec.Shards < 0 {
			errs = append(errs, fmt.Errorf("tiers.%s: shards must not be negative", name))
			continue
		}
		text := strings.ReplaceAll(spec.Subject, "{idc}", idc)
		text = strings.ReplaceAll(text, "{shard}", strconv.Itoa(HashShard(idc+"/"+node, spec.Shards)))
		if strings.Contains(text, "{node}") {
			if node == "" {
				errs = append(errs, fmt.Errorf("tiers.%s: subject %q names {node}, but this worker's host runs no node", name, spec.Subject))
				continue
			}
			text = strings.ReplaceAll(text, "{node}", node)
		}
		var p Pattern
		if strings.HasPrefix(text, SummaryRoot+".") {
			p, err = ParseSummaryPattern(text)
		} else {
			p, err = ParsePattern(text)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("tiers.%s: %w", name, err))
			continue
		}
		if p.Tier != t {
			errs = append(errs, fmt.Errorf("tiers.%s: subject %q is of tier %s", name, text, p.Tier))
			continue
		}
		if spec.MaxRate < 0 || spec.StaleAfter < 0 {
			errs = append(errs, fmt.Errorf("tiers.%s: max_rate and stale_after must not be negative", name))
			continue
		}
		stale := spec.StaleAfter
		if stale == 0 {
			stale = 3 * DefaultPolicies[t].Heartbeat
		}
		out = append(out, tierSub{tier: t, pattern: p, filter: TierFilter{MinBacklog: spec.MinBacklog, MaxRate: spec.MaxRate, StaleAfter: stale}})
	}
	return out, errors.Join(errs...)
}

// Subscription is one tier of a filter, resolved for a worker.
type Subscription struct {
	Tier    Tier
	Pattern Pattern
	Filter  TierFilter
}

// Resolve substitutes the worker's IDC and node into every tier of f and
// validates it (as a Watcher does), nearest tier first. node may be empty
// for a worker-only host, whose local tier is then an error.
func (f Filters) Resolve(idc, node string) ([]Subscription, error) {
	subs, err := f.resolve(idc, node)
	if err != nil {
		return nil, err
	}
	out := make([]Subscription, 0, len(subs))
	for _, s := range subs {
		out = append(out, Subscription{Tier: s.tier, Pattern: s.pattern, Filter: s.filter})
	}
	slices.SortFunc(out, func(a, b Subscription) int { return int(a.Tier) - int(b.Tier) })
	return out, nil
}
