// Package backlogpb holds the generated protobuf type of the backlog notice
// (backlog.proto).
package backlogpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative backlog.proto
