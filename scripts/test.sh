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
go test -race -count=1 -timeout 25m ./... "$@"
