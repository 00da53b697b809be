// Package meshpb holds the generated protobuf types of the mesh's gossip
// metadata and members reply (mesh.proto).
package meshpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative mesh.proto
