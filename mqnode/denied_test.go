package mqnode

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mqmesh/mqmesh/mqnode/wirepb"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// A request whose server goes away while it waits fails with
// ErrUnavailable when the connection drops, not at its timeout; one made
// while the connection is down fails at once.
func TestRequestFailsWhenTheConnectionDrops(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	defer s.Shutdown()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// A responder that never answers: the request waits for its reply.
	got := make(chan struct{}, 1)
	if _, err := nc.Subscribe("mq.x.n.info", func(*nats.Msg) { got <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	c := NewClient(nc, "x", "n")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		var rep wirepb.InfoReply
		errc <- c.call(ctx, "mq.x.n.info", &wirepb.InfoRequest{}, &rep, func() *wirepb.Error { return rep.Error })
	}()
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("the request never reached the responder")
	}
	s.Shutdown()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("request with its server gone: %v, want ErrUnavailable", err)
		}
	case <-ctx.Done():
		t.Fatal("the request waited out its whole timeout after the connection dropped")
	}
	var rep wirepb.InfoReply
	err = c.call(ctx, "mq.x.n.info", &wirepb.InfoRequest{}, &rep, func() *wirepb.Error { return rep.Error })
	if !errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
		t.Fatalf("request while disconnected: %v, want ErrUnavailable at once", err)
	}
}

func TestCodeOfCancelledRequestIsUnavailable(t *testing.T) {
	for _, err := range []error{context.Canceled, context.DeadlineExceeded} {
		if c := CodeOf(err); c != wirepb.Code_UNAVAILABLE {
			t.Errorf("CodeOf(%v) = %v, want UNAVAILABLE", err, c)
		}
	}
}
