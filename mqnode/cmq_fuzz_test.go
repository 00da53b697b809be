package mqnode

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// FuzzTopicSync: a topic sync message from the mesh (outside input) either
// fails to decode or yields records that checkTopicRecord accepts only when
// every name is a valid token and every subscription is sound.
func FuzzTopicSync(f *testing.F) {
	good, _ := proto.Marshal(&wirepb.TopicSync{From: "a.b", Topics: []*wirepb.Topic{{Name: "t",
		Subscriptions: []*wirepb.TopicSubscription{{Queue: "q"}, {Queue: "v", Header: "tier", Value: "gold"}}}}})
	f.Add(good)
	bad, _ := proto.Marshal(&wirepb.TopicSync{Topics: []*wirepb.Topic{{Name: "a.>", Subscriptions: []*wirepb.TopicSubscription{{Queue: "q"}}}}})
	f.Add(bad)
	f.Add([]byte{0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		var msg wirepb.TopicSync
		if proto.Unmarshal(b, &msg) != nil {
			return
		}
		for _, tp := range msg.Topics {
			if checkTopicRecord(tp) != nil {
				continue
			}
			if ValidateTarget("t", TopicPrefix+tp.Name) != nil {
				t.Fatalf("accepted topic with invalid name %q", tp.Name)
			}
			if !tp.Deleted && len(tp.Subscriptions) == 0 {
				t.Fatalf("accepted topic %q without subscriptions", tp.Name)
			}
		}
	})
}

// FuzzReplayCursor: a replay cursor from a client is accepted only when it
// is a settled key of the queue.
func FuzzReplayCursor(f *testing.F) {
	f.Add(settledKey("jobs", 1700000000000, 7))
	f.Add([]byte("zz"))
	f.Fuzz(func(t *testing.T, b []byte) {
		at, err := settledKeyTime("jobs", b)
		if err != nil {
			return
		}
		if string(settledKey("jobs", at, 0)[:len(b)-8]) != string(b[:len(b)-8]) {
			t.Fatalf("accepted cursor %x that is not a settled key of jobs", b)
		}
	})
}
