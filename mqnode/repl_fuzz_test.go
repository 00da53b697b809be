package mqnode

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// FuzzReplRequest feeds arbitrary bytes to the buddy's request decoder: it
// never panics, and what it accepts only writes replicated keyspace keys
// (task, dead letter, dedup) of valid queue names, well formed.
func FuzzReplRequest(f *testing.F) {
	seed := func(req *wirepb.ReplRequest) {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(&wirepb.ReplRequest{PrimaryIdc: "sh", Primary: "n1", Epoch: 3, Seq: 1, Records: []*wirepb.ReplRecord{
		{Key: taskKey("jobs", 1700000000000, 7), Value: []byte{1, 2, 3}},
		{Key: deadKey("jobs", 9), Del: true},
		{Key: dedupKey("jobs", "k1"), Value: []byte("id"), ExpiresUnixMs: 1800000000000},
	}})
	seed(&wirepb.ReplRequest{PrimaryIdc: "sh", Primary: "a.>", Records: []*wirepb.ReplRecord{{Key: []byte("!seq")}}})
	seed(&wirepb.ReplRequest{PrimaryIdc: "sh", Primary: "n1", Records: []*wirepb.ReplRecord{{Key: []byte{'t', 200, 'q'}}}})
	f.Add([]byte{0x2a, 0x03, 0x0a, 0x01, 't'})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeReplRequest(b)
		if err != nil {
			return
		}
		for _, rec := range req.Records {
			q, ok := replQueueOf(rec.Key)
			if !ok || q == "" {
				t.Fatalf("accepted key %x outside the replicated keyspaces", rec.Key)
			}
			switch rec.Key[0] {
			case pfxTask:
				if _, _, err := parseTaskKey(q, rec.Key); err != nil {
					t.Fatalf("accepted malformed task key %x: %v", rec.Key, err)
				}
			case pfxDead:
				if len(rec.Key) != 2+len(q)+8 {
					t.Fatalf("accepted malformed dead key %x", rec.Key)
				}
			}
			if rec.Del && len(rec.Value) > 0 {
				t.Fatal("accepted a delete with a value")
			}
		}
		// What is accepted survives a round trip unchanged.
		again, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		req2, err := decodeReplRequest(again)
		if err != nil || !proto.Equal(req, req2) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
