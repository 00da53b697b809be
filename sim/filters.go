package sim

import (
	"fmt"

	"github.com/mqmesh/mqmesh/backlog"
)

// builtinFilters mirror configs/filters/*.yaml (a test keeps them equal),
// so the binary runs anywhere.
var builtinFilters = map[string]string{
	"local-only": `tiers:
  local: {subject: "bl.h.{idc}.{node}.>", min_backlog: 1}
`,
	"local-idc": `tiers:
  local: {subject: "bl.h.{idc}.{node}.>", min_backlog: 1}
  idc: {subject: "bls.i.{idc}.{shard}", shards: 1, min_backlog: 1, max_rate: 100}
`,
	"everything": `tiers:
  local: {subject: "bl.h.{idc}.{node}.>", min_backlog: 1}
  idc: {subject: "bls.i.{idc}.{shard}", shards: 1, min_backlog: 1, max_rate: 100}
  global: {subject: "bls.g.*.{shard}", shards: 1, min_backlog: 1, max_rate: 20}
`,
	"noisy-neighbour": `tiers:
  local: {subject: "bl.h.{idc}.{node}.>", min_backlog: 1}
  idc: {subject: "bl.i.{idc}.>", min_backlog: 200, max_rate: 10, stale_after: 10s}
  global: {subject: "bl.g.>", min_backlog: 5000, max_rate: 2, stale_after: 30s}
`,
}

func filterFor(name string) (backlog.Filters, error) {
	doc, ok := builtinFilters[name]
	if !ok {
		return backlog.Filters{}, fmt.Errorf("filter %q: want one of %v", name, Filters)
	}
	return backlog.ParseFilters([]byte(doc))
}

func mustFilter(name string) backlog.Filters {
	f, err := filterFor(name)
	if err != nil {
		panic(err)
	}
	return f
}
