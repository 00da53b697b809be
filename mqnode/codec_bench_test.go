package mqnode

import (
	"testing"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// BenchmarkTaskRecord encodes and decodes a stored task of 256 B, as every
// enqueue and refill does, with the producer as a field (how it travels
// now) and as one header (how it did: a protobuf map, by reflection).
func BenchmarkTaskRecord(b *testing.B) {
	for _, c := range []struct {
		name string
		task *wirepb.Task
	}{
		{"producer-field", &wirepb.Task{Id: "01a23754-c60f-71d2-aad2-8272aef4e1a8", Queue: "bench", Payload: make([]byte, 256), CreatedUnixMs: 1764700000000, Producer: "bench-3@vm"}},
		{"producer-header", &wirepb.Task{Id: "01a23754-c60f-71d2-aad2-8272aef4e1a8", Queue: "bench", Payload: make([]byte, 256), CreatedUnixMs: 1764700000000, Headers: map[string]string{HeaderProducer: "bench-3@vm"}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				frame, err := encodeTask(c.task)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := decodeTask(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
