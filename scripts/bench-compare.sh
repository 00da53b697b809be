#!/usr/bin/env bash
# Continuous benchmarks, on demand (not part of CI's pass/fail: a shared
# machine's figures move by more than the threshold).
#
# Runs `mqmesh bench node`, `bench latency` and `bench remote` with --json
# and compares each with the last committed result under docs/bench/
# (git show HEAD:docs/bench/<bench>.json) through `mqmesh bench compare`,
# which flags every figure worse by more than 15 %.
#
#   scripts/bench-compare.sh                 # all three benches
#   scripts/bench-compare.sh latency         # one
#   scripts/bench-compare.sh --save node     # also write docs/bench/node.json (commit it)
#   scripts/bench-compare.sh --new DIR       # compare DIR/<bench>.json instead of running
#
# Extra flags per bench: BENCH_NODE_ARGS, BENCH_LATENCY_ARGS, BENCH_REMOTE_ARGS.
# Exit status: 0 when nothing regressed, 1 when something did, 2 on a failed run.
set -euo pipefail
cd "$(dirname "$0")/.."

save=0
newdir=""
benches=()
while (($#)); do
	case "$1" in
	--save) save=1 ;;
	--new) newdir="$2"; shift ;;
	node | latency | remote) benches+=("$1") ;;
	*) echo "usage: $0 [--save] [--new DIR] [node|latency|remote ...]" >&2; exit 2 ;;
	esac
	shift
done
((${#benches[@]})) || benches=(node latency remote)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/perf-bench-compare-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/mqmesh" ./cmd/mqmesh

status=0
for b in "${benches[@]}"; do
	new="$tmp/$b.json"
	if [[ -n "$newdir" ]]; then
		cp "$newdir/$b.json" "$new"
	else
		var="BENCH_${b^^}_ARGS"
		echo "== mqmesh bench $b --json ${!var:-}" >&2
		# shellcheck disable=SC2086
		if ! "$tmp/mqmesh" bench "$b" --json ${!var:-} >"$new"; then
			echo "bench $b failed" >&2
			status=2
			continue
		fi
	fi
	if git show "HEAD:docs/bench/$b.json" >"$tmp/$b.base.json" 2>/dev/null; then
		echo "== $b: against docs/bench/$b.json of $(git log -1 --format='%h %cs' -- "docs/bench/$b.json")"
		if ! "$tmp/mqmesh" bench compare "$tmp/$b.base.json" "$new"; then
			((status == 2)) || status=1
		fi
	else
		echo "== $b: no committed docs/bench/$b.json to compare with"
	fi
	if ((save)); then
		mkdir -p docs/bench
		cp "$new" "docs/bench/$b.json"
		echo "saved docs/bench/$b.json"
	fi
done
exit $status
