#!/usr/bin/env bash
# The test entry point: the README's test command, and what CI runs.
# Checks formatting and vet, then runs every test with the race detector
# (Badger in temp dirs, embedded NATS on loopback, child processes for the
# crash tests). Fuzz targets run their seed corpora here; scripts/fuzz.sh
# fuzzes them for real.
set -euo pipefail
cd "$(dirname "$0")/.."

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n "$unformatted" ]]; then
  echo "gofmt needed on:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...
# The dashboard's browser test needs Chromium (Debian package chromium).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && command -v apt-get >/dev/null; then
  sudo=; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# The netns drill (real node and worker processes on their own network
# stacks) runs after the rest, not beside it: on a 2-core machine its
# processes would starve the timing of the in-process mesh tests.
go test -race -count=1 -timeout 25m $(go list ./... | grep -v /internal/netdrill) "$@"
go test -race -count=1 -timeout 10m ./internal/netdrill "$@"
