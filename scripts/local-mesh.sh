#!/usr/bin/env bash
# Run a local mqmesh mesh of 2 IDCs x 2 hosts on one Linux machine: one
# `mqmesh node` per host, each host on its own loopback address 127.0.1.1 ..
# 127.0.1.4 (Linux routes all of 127.0.0.0/8 to lo), with the configs of
# configs/mesh/. Loopback only: nothing listens on another interface.
# Secured like a real mesh: TLS, role credentials and gossip encryption from
# the secrets in STATE/secrets (created with `mqmesh secrets init` if absent).
#
# Usage:
#   scripts/local-mesh.sh [start]           start, wait for the mesh, print how to
#                                           reach it, run until Ctrl-C (or SIGTERM),
#                                           then stop every node
#   scripts/local-mesh.sh start --detach    the same, but return once the mesh is
#                                           up and leave the nodes running
#   scripts/local-mesh.sh stop              stop a mesh started with --detach
#   scripts/local-mesh.sh status            every node's view of the mesh
#   scripts/local-mesh.sh kill HOST         SIGKILL one node (HOST: a1 or idc-a-host1)
#   scripts/local-mesh.sh restart HOST      start a stopped or killed node exactly as at
#                                           first start, wait until every node sees
#                                           every node alive again
#
# "Up" means every running node lists every node of the mesh as alive (not
# just the first one), and none reports itself cut off from the mesh.
#
# Stopping sends SIGTERM to one node at a time, last started first (a
# graceful leave: the others list the host as "left"), then SIGKILL if the
# node still runs after the stop timeout.
#
# Environment:
#   MQMESH_LOCAL_MESH_DIR           state dir: binary, secrets, data dirs, logs,
#                                   pid file (default ./local-mesh)
#   MQMESH_BIN                      use this mqmesh binary; default: build one
#                                   with `go build -o STATE/mqmesh ./cmd/mqmesh`
#   MQMESH_LOCAL_MESH_WAIT          seconds to wait for the mesh to form (60)
#   MQMESH_LOCAL_MESH_STOP_TIMEOUT  seconds one node's graceful stop may take (20)
#   MQMESH_LOG_LEVEL                log level of the nodes (info)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
hosts=(idc-a-host1 idc-a-host2 idc-b-host1 idc-b-host2)
wait_secs=${MQMESH_LOCAL_MESH_WAIT:-60}
stop_secs=${MQMESH_LOCAL_MESH_STOP_TIMEOUT:-20}

say() { printf '%s\n' "$*" >&2; }
die() {
	say "local-mesh: $*"
	exit 1
}
now_ms() { date +%s%3N; }

# usage [STATUS]: the usage lines of the header; exit 2 (or STATUS).
usage() {
	sed -n '7,20p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit "${1:-2}"
}

cmd=${1:-start}
[[ $# -gt 0 ]] && shift
detach=
case $cmd in
start)
	for a in "$@"; do
		case $a in
		--detach | -d) detach=1 ;;
		*) usage ;;
		esac
	done
	;;
stop | status) [[ $# -eq 0 ]] || usage ;;
kill | restart) [[ $# -eq 1 ]] || usage ;;
-h | --help | help) usage 0 ;;
*) usage ;;
esac

state=${MQMESH_LOCAL_MESH_DIR:-./local-mesh}
mkdir -p "$state"
state=$(cd "$state" && pwd)
pidfile=$state/pids
secrets=$state/secrets

# conf HOST KEY: a top-level key of the host's config file.
conf() { sed -n "s/^$2: *//p" "$repo/configs/mesh/$1.yaml"; }
url_of() { echo "nats://$(conf "$1" listen)"; }
first_url=$(url_of "${hosts[0]}")

# own_children is set in the invocation that started the nodes: they are
# its children, so their pids cannot be reused, and a node just forked may
# not have exec'd mqmesh yet.
own_children=

# running PID: the process exists, is not a zombie, and (unless it is our
# own child) is a node of this state dir, so a reused pid is never
# signalled.
running() {
	local pid=$1 stat
	[[ -r /proc/$pid/stat ]] || return 1
	stat=$(<"/proc/$pid/stat") || return 1
	stat=${stat##*) }
	case ${stat%% *} in Z | X) return 1 ;; esac
	[[ -n $own_children ]] && return 0
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--data $state/"
}

# pids: the pids in the pid file that are still running, last started
# first.
pids() {
	[[ -f $pidfile ]] || return 0
	local host pid out=()
	while read -r host pid; do
		if running "$pid"; then out=("$pid" "${out[@]}"); fi
	done <"$pidfile"
	if ((${#out[@]})); then printf '%s\n' "${out[@]}"; fi
}

# stop_all: stop the nodes one at a time, last started first, so each
# announces its leave to members still running: SIGTERM, then SIGKILL if
# it still runs after the stop timeout.
stop_all() {
	local live pid deadline killed=0
	live=$(pids)
	if [[ -z $live ]]; then
		rm -f "$pidfile"
		return 0
	fi
	say "local-mesh: stopping $(wc -w <<<"$live") node(s) (SIGTERM: graceful leave)"
	for pid in $live; do
		kill -TERM "$pid" 2>/dev/null || true
		deadline=$(($(now_ms) + stop_secs * 1000))
		while running "$pid" && (($(now_ms) < deadline)); do sleep 0.05; done
		if running "$pid"; then
			say "local-mesh: node pid $pid still running ${stop_secs}s after SIGTERM: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			killed=1
			while running "$pid"; do sleep 0.05; done
		fi
	done
	rm -f "$pidfile"
	if ((killed)); then say "local-mesh: stopped (some nodes killed)"; else say "local-mesh: stopped"; fi
}

# host_arg NAME: the host (config file name) of a node name (a1) or host
# name (idc-a-host1).
host_arg() {
	local h
	for h in "${hosts[@]}"; do
		if [[ $1 == "$h" || $1 == "$(conf "$h" name)" ]]; then
			echo "$h"
			return
		fi
	done
	die "unknown host $1 (want one of: ${hosts[*]} or their node names)"
}

# host_pid HOST: the running pid of HOST's node, or nothing.
host_pid() {
	[[ -f $pidfile ]] || return 0
	local h pid
	while read -r h pid; do
		if [[ $h == "$1" ]] && running "$pid"; then echo "$pid"; fi
	done <"$pidfile"
}

# members_json HOST: the members as HOST's node sees them (--json), or fail.
members_json() {
	"$bin" mesh members --secrets "$secrets" --server "$(url_of "$1")" --json --timeout 2s 2>/dev/null
}

# alive_members HOST: how many members HOST's node lists as alive (0 when it
# does not answer or reports itself cut off from the mesh).
alive_members() {
	local out
	out=$(members_json "$1") || {
		echo 0
		return
	}
	if grep -q '"ready": false' <<<"$out"; then
		echo 0
		return
	fi
	grep -c '"state": "alive"' <<<"$out" || true
}

# converged: every host's node runs and lists every host's node as alive.
converged() {
	local h
	for h in "${hosts[@]}"; do
		[[ $(alive_members "$h") -eq ${#hosts[@]} ]] || return 1
	done
}

# wait_converged T0: wait until converged (fail after the wait); set
# converged_ms to how long it took since T0.
converged_ms=
wait_converged() {
	local deadline=$(($1 + wait_secs * 1000))
	until converged; do
		[[ $(pids | wc -l) -eq ${#hosts[@]} ]] || fail "a node exited while the mesh formed"
		(($(now_ms) < deadline)) || fail "not every node saw ${#hosts[@]} alive members within ${wait_secs}s (see: $0 status)"
		sleep 0.1
	done
	converged_ms=$(($(now_ms) - $1))
}

# fail MSG: report, show the node logs' tails, stop everything (unless
# keep_on_fail: restart leaves the mesh for inspection), exit 1.
keep_on_fail=
fail() {
	say "local-mesh: $*"
	local h
	for h in "${hosts[@]}"; do
		if [[ -s $state/$h/node.log ]]; then
			say "--- $state/$h/node.log (last lines)"
			tail -n 15 "$state/$h/node.log" >&2
		fi
	done
	[[ -n $keep_on_fail ]] || stop_all
	exit 1
}

start_node() {
	local host=$1 dir=$state/$1 launcher=()
	mkdir -p "$dir"
	: >"$dir/ready"
	# Each node in its own session, so a Ctrl-C in the terminal reaches
	# only this script (which then stops the nodes once, in order), and a
	# detached mesh outlives the terminal.
	if command -v setsid >/dev/null; then launcher=(setsid); else launcher=(nohup); fi
	"${launcher[@]}" "$bin" node --config "$repo/configs/mesh/$host.yaml" --data "$dir/data" --secrets "$secrets" \
		--log-level "${MQMESH_LOG_LEVEL:-info}" </dev/null >"$dir/ready" 2>"$dir/node.log" &
	local pid=$!
	if [[ -f $pidfile ]]; then sed -i "/^$host /d" "$pidfile"; fi
	echo "$host $pid" >>"$pidfile"
	# The ready line on stdout says the node serves and has joined.
	local deadline=$(($(now_ms) + wait_secs * 1000))
	until [[ -s $dir/ready ]]; do
		running "$pid" || fail "node $host (pid $pid) exited before it was ready"
		(($(now_ms) < deadline)) || fail "node $host not ready after ${wait_secs}s"
		sleep 0.02
	done
}

print_usage_info() {
	local h
	echo "Local mesh up: every node sees ${#hosts[@]} alive members $1 ms after the first node started (2 IDCs x 2 hosts)."
	echo
	printf '  %-6s %-4s %-24s %s\n' IDC NODE "CLIENT URL" LOG
	for h in "${hosts[@]}"; do
		printf '  %-6s %-4s %-24s %s\n' "$(conf "$h" idc)" "$(conf "$h" name)" "$(url_of "$h")" "$state/$h/node.log"
	done
	echo
	echo "Try (every command needs the mesh's secrets):"
	echo "  export MQMESH_SECRETS=$secrets"
	echo "  $bin enqueue --server $first_url --queue demo --payload hello"
	echo "  $bin stats --server $first_url"
	echo "  $bin mesh members --server $(url_of "${hosts[2]}")"
	echo "  $repo/scripts/local-mesh.sh status | kill a1 | restart a1"
	echo
	if [[ -n $detach ]]; then
		echo "Stop: $repo/scripts/local-mesh.sh stop   (state: $state)"
	else
		echo "Stop: Ctrl-C"
	fi
}

cmd_start() {
	if [[ -n $(pids) ]]; then
		die "a local mesh is already running from $state (stop it: $0 stop)"
	fi
	rm -f "$pidfile"
	if [[ -n ${MQMESH_BIN:-} ]]; then
		bin=$MQMESH_BIN
		[[ -x $bin ]] || die "MQMESH_BIN=$bin is not an executable"
	else
		bin=$state/mqmesh
		say "local-mesh: building $bin"
		(cd "$repo" && go build -o "$bin" ./cmd/mqmesh) || die "go build failed"
	fi
	if [[ ! -f $secrets/ca.crt ]]; then
		"$bin" secrets init "$secrets" >/dev/null || die "could not create the secrets in $secrets"
		say "local-mesh: created the mesh's secrets in $secrets"
	fi
	own_children=1
	trap 'fail "interrupted while starting"' INT TERM
	local t0 h
	t0=$(now_ms)
	# One at a time, the first (which starts the mesh) before the others:
	# a node learns the other IDCs' gateways from the members it joins.
	for h in "${hosts[@]}"; do start_node "$h"; done
	wait_converged "$t0"
	print_usage_info "$converged_ms"
	if [[ -n $detach ]]; then
		trap - INT TERM
		return 0
	fi
	local interrupted=
	trap 'interrupted=1' INT TERM
	while [[ -z $interrupted ]]; do
		wait -n 2>/dev/null || true
		[[ -z $interrupted ]] || break
		if [[ -z $(pids) ]]; then
			say "local-mesh: every node has exited"
			break
		fi
		if [[ $(pids | wc -l) -lt ${#hosts[@]} ]]; then
			say "local-mesh: a node exited; see the logs in $state (the rest keep running until Ctrl-C)"
		fi
	done
	trap - INT TERM
	stop_all
	wait 2>/dev/null || true
}

use_bin() {
	bin=${MQMESH_BIN:-$state/mqmesh}
	[[ -x $bin ]] || die "no mqmesh binary at $bin (start the mesh first)"
}

# cmd_status: every node's view: one summary line per node, then its table.
# Exit status 0 when every node sees every node alive, 1 otherwise.
cmd_status() {
	use_bin
	[[ -n $(pids) ]] || die "no local mesh running from $state"
	local h pid out alive ok=0
	for h in "${hosts[@]}"; do
		pid=$(host_pid "$h")
		if [[ -z $pid ]]; then
			echo "== $(conf "$h" name) ($h): NOT RUNNING"
			ok=1
			continue
		fi
		if ! out=$(members_json "$h"); then
			echo "== $(conf "$h" name) ($h, pid $pid): does not answer"
			ok=1
			continue
		fi
		alive=$(grep -c '"state": "alive"' <<<"$out" || true)
		local note=""
		if grep -q '"ready": false' <<<"$out"; then note=" NOT READY: $(sed -n 's/.*"not_ready": "\(.*\)".*/\1/p' <<<"$out")"; fi
		[[ $alive -eq ${#hosts[@]} && -z $note ]] || ok=1
		echo "== $(conf "$h" name) ($h, pid $pid): sees $alive of ${#hosts[@]} alive$note"
		"$bin" mesh members --secrets "$secrets" --server "$(url_of "$h")" --timeout 2s 2>&1 | sed 's/^/   /'
	done
	return $ok
}

cmd_kill() {
	local h pid
	h=$(host_arg "$1")
	pid=$(host_pid "$h")
	[[ -n $pid ]] || die "$h is not running"
	kill -KILL "$pid"
	while running "$pid"; do sleep 0.02; done
	say "local-mesh: killed $(conf "$h" name) ($h, pid $pid) with SIGKILL"
}

# cmd_restart HOST: start HOST's node exactly as at first start (same
# config, same data dir, no extra flags), then wait until every node sees
# every node alive.
cmd_restart() {
	local h t0
	h=$(host_arg "$1")
	use_bin
	[[ -z $(host_pid "$h") ]] || die "$h is running (kill or stop it first)"
	t0=$(now_ms)
	own_children=1
	keep_on_fail=1
	start_node "$h"
	own_children=
	wait_converged "$t0"
	echo "Restarted $(conf "$h" name) ($h): every node sees ${#hosts[@]} alive members $converged_ms ms after its start."
}

case $cmd in
start) cmd_start ;;
stop)
	[[ -f $pidfile ]] || {
		say "local-mesh: no local mesh in $state (no pid file)"
		exit 0
	}
	stop_all
	;;
status) cmd_status ;;
kill) cmd_kill "$1" ;;
restart) cmd_restart "$1" ;;
esac
