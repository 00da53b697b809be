// Package opspb holds the generated protobuf types of the node's
// operations summary (ops.proto). Regenerate with `go generate ./mqnode/opspb`.
package opspb

//go:generate protoc --go_out=. --go_opt=paths=source_relative ops.proto
