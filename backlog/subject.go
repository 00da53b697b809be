package backlog

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mqmesh/mqmesh/internal/subject"
)

// Tier is a level of the broadcast hierarchy. Each tier is its own subject
// space with its own publisher thresholds and rates:
//
//	bl.h.<idc>.<node>.<queue>   host tier: every level change, for the host's own workers
//	bl.i.<idc>.<node>.<queue>   IDC tier: real backlog, for the workers of the same IDC
//	bl.g.<idc>.<node>.<queue>   global tier: large backlog, for workers in every IDC
//
// A filter is one subject pattern per tier: local = bl.h.<myidc>.<mynode>.>,
// cross-machine = bl.i.<myidc>.>, cross-IDC = bl.g.>. NATS routes and
// gateways forward only where someone subscribes, so an IDC whose workers
// subscribe to no global pattern receives nothing from other IDCs.
type Tier int

const (
	TierHost Tier = iota
	TierIDC
	TierGlobal
	// NumTiers is the number of tiers.
	NumTiers
)

// Tiers lists every tier, nearest first.
var Tiers = []Tier{TierHost, TierIDC, TierGlobal}

var tierTokens = [NumTiers]string{"h", "i", "g"}
var tierNames = [NumTiers]string{"local", "idc", "global"}

func (t Tier) String() string {
	if t < 0 || t >= NumTiers {
		return fmt.Sprintf("tier(%d)", int(t))
	}
	return tierNames[t]
}

// Token is the tier's subject token.
func (t Tier) Token() string { return tierTokens[t] }

// ParseTier reads a tier name (local, idc, global) or token (h, i, g).
func ParseTier(s string) (Tier, error) {
	for t := Tier(0); t < NumTiers; t++ {
		if s == tierNames[t] || s == tierTokens[t] {
			return t, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown tier %q (want local, idc or global)", ErrBadSubject, s)
}

// Root is the first token of every backlog subject.
const Root = "bl"

// HeartbeatQueue is the queue token of a node heartbeat (a name no queue
// can have: queue names may not start with '_').
const HeartbeatQueue = "_node"

// ErrBadSubject is wrapped by every subject and pattern error.
var ErrBadSubject = errors.New("bad backlog subject")

// Subject is the subject of a notice about queue on node in idc, in tier.
func Subject(t Tier, idc, node, queue string) string {
	return Root + "." + t.Token() + "." + idc + "." + node + "." + queue
}

// Address is a parsed backlog subject.
type Address struct {
	Tier  Tier
	IDC   string
	Node  string
	Queue string // HeartbeatQueue for a node heartbeat
}

// ParseSubject parses and validates a notice subject.
func ParseSubject(s string) (Address, error) {
	toks := strings.Split(s, ".")
	if len(toks) != 5 || toks[0] != Root {
		return Address{}, fmt.Errorf("%w: %q: want %s.<tier>.<idc>.<node>.<queue>", ErrBadSubject, s, Root)
	}
	t, err := ParseTier(toks[1])
	if err != nil || toks[1] != t.Token() {
		return Address{}, fmt.Errorf("%w: %q: tier token %q", ErrBadSubject, s, toks[1])
	}
	a := Address{Tier: t, IDC: toks[2], Node: toks[3], Queue: toks[4]}
	for _, f := range []struct{ name, v string }{{"idc", a.IDC}, {"node", a.Node}} {
		if err := subject.Validate(f.name, f.v); err != nil {
			return Address{}, fmt.Errorf("%w: %q: %w", ErrBadSubject, s, err)
		}
	}
	if a.Queue != HeartbeatQueue {
		if err := subject.Validate("queue", a.Queue); err != nil {
			return Address{}, fmt.Errorf("%w: %q: %w", ErrBadSubject, s, err)
		}
	}
	return a, nil
}

// Pattern is a validated subscription pattern for one tier.
type Pattern struct {
	Tier Tier
	Text string
	// Summary: the pattern is of summaries (bls.<idc>.<shard>), of the
	// global tier.
	Summary bool
}

// ParseSummaryPattern validates a summary subscription pattern:
// bls.<i|g>.<idc|*>.<shard|*> (or ending in '>' after the tier). The tier
// token must be literal.
func ParseSummaryPattern(s string) (Pattern, error) {
	toks := strings.Split(s, ".")
	bad := func(why string) (Pattern, error) {
		return Pattern{}, fmt.Errorf("%w: summary pattern %q: %s", ErrBadSubject, s, why)
	}
	if toks[0] != SummaryRoot || len(toks) < 3 || len(toks) > 4 {
		return bad("want " + SummaryRoot + ".<i|g>.<idc|*>.<shard|*>")
	}
	t, err := ParseTier(toks[1])
	if err != nil || toks[1] != t.Token() || t == TierHost {
		return bad("tier token must be i or g")
	}
	for i, tok := range toks[2:] {
		last := i == len(toks)-3
		switch {
		case tok == ">":
			if !last {
				return bad("'>' must be the last token")
			}
		case tok == "*":
		case i == 0:
			if err := subject.Validate("idc", tok); err != nil {
				return bad(err.Error())
			}
		default:
			if n, err := strconv.Atoi(tok); err != nil || n < 0 {
				return bad("shard must be a number")
			}
		}
		if last && len(toks) < 4 && tok != ">" {
			return bad("too short; end it with '>' or name idc.shard")
		}
	}
	return Pattern{Tier: t, Text: s, Summary: true}, nil
}

// ParsePattern validates a subscription pattern: bl.<tier>, then up to
// idc, node, queue tokens, each a valid name or '*', with '>' allowed as
// the last token. The tier token must be literal: one pattern, one tier.
func ParsePattern(s string) (Pattern, error) {
	toks := strings.Split(s, ".")
	if len(toks) < 3 || len(toks) > 5 || toks[0] != Root {
		return Pattern{}, fmt.Errorf("%w: pattern %q: want %s.<tier>.<idc|*>[.<node|*>[.<queue|*>]] or ending in '>'", ErrBadSubject, s, Root)
	}
	t, err := ParseTier(toks[1])
	if err != nil || toks[1] != t.Token() {
		return Pattern{}, fmt.Errorf("%w: pattern %q: tier token must be h, i or g", ErrBadSubject, s)
	}
	names := []string{"idc", "node", "queue"}
	for i, tok := range toks[2:] {
		last := i == len(toks)-3
		switch {
		case tok == ">":
			if !last {
				return Pattern{}, fmt.Errorf("%w: pattern %q: '>' must be the last token", ErrBadSubject, s)
			}
		case tok == "*":
		case names[i] == "queue" && tok == HeartbeatQueue:
		default:
			if err := subject.Validate(names[i], tok); err != nil {
				return Pattern{}, fmt.Errorf("%w: pattern %q: %w", ErrBadSubject, s, err)
			}
		}
		if last && len(toks) < 5 && tok != ">" {
			return Pattern{}, fmt.Errorf("%w: pattern %q: too short; end it with '>' or name all of idc.node.queue", ErrBadSubject, s)
		}
	}
	return Pattern{Tier: t, Text: s}, nil
}

// Matches reports whether subject s matches the pattern.
func (p Pattern) Matches(s string) bool {
	pt, st := strings.Split(p.Text, "."), strings.Split(s, ".")
	for i, tok := range pt {
		if tok == ">" {
			return len(st) > i
		}
		if i >= len(st) || (tok != "*" && tok != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}
