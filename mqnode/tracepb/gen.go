// Package tracepb holds the generated protobuf types of the task trace
// (trace.proto). Regenerate with `go generate ./mqnode/tracepb`.
package tracepb

//go:generate protoc --go_out=. --go_opt=paths=source_relative trace.proto
