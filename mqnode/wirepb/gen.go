// Package wirepb holds the generated protobuf types of the MQ node wire
// schema (wire.proto). Regenerate with `go generate ./mqnode/wirepb` after
// installing protoc and protoc-gen-go (scripts/genproto.sh does both).
package wirepb

//go:generate protoc --go_out=. --go_opt=paths=source_relative wire.proto cmq.proto repl.proto repl_status.proto
