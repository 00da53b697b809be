package mesh

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// cutTransport is memberlist's own network transport with a switch that
// drops everything this member sends to some addresses (UDP and TCP): cut
// on both sides, it is a network partition between them.
type cutTransport struct {
	*memberlist.NetTransport
	mu  sync.Mutex
	cut map[string]bool // host:port
}

func (c *cutTransport) blocked(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut[addr]
}

func (c *cutTransport) set(addrs []string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range addrs {
		c.cut[a] = on
	}
}

func (c *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if c.blocked(addr) {
		return time.Now(), nil // sent into the void
	}
	return c.NetTransport.WriteTo(b, addr)
}

func (c *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return c.WriteTo(b, a.Addr)
}

func (c *cutTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	if c.blocked(addr) {
		time.Sleep(min(d, 200*time.Millisecond))
		return nil, fmt.Errorf("cut link to %s", addr)
	}
	return c.NetTransport.DialTimeout(addr, d)
}

func (c *cutTransport) DialAddressTimeout(a memberlist.Address, d time.Duration) (net.Conn, error) {
	return c.DialTimeout(a.Addr, d)
}

// startCutMesh starts a member whose links can be cut; dead members are
// forgotten by memberlist after 1 s (GossipToTheDeadTime), so only the
// rejoin loop can merge the sides again.
func startCutMesh(t *testing.T, idc, name string, seeds ...string) (*Mesh, *cutTransport) {
	t.Helper()
	ct := &cutTransport{cut: map[string]bool{}}
	cfg := Config{Meta: Meta{Role: RoleNode, IDC: idc, Name: name}, BindPort: RandomPort, Seeds: seeds, Profile: ProfileLocal,
		RejoinInterval: 500 * time.Millisecond, RejoinMax: 2 * time.Second, Logger: testLogger(t)}
	cfg.tune = func(mc *memberlist.Config) error {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0, Logger: nil})
		if err != nil {
			return err
		}
		ct.NetTransport = nt
		mc.Transport = ct
		mc.BindPort, mc.AdvertisePort = nt.GetAutoBindPort(), nt.GetAutoBindPort()
		mc.GossipToTheDeadTime = time.Second
		mc.SuspicionMaxTimeoutMult = 2 // a partition is detected in seconds, not tens
		return nil
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Kill() })
	return m, ct
}

// TestPartitionedSidesMerge: a 2 | 2 partition lasts until each side has
// declared the other failed and memberlist has stopped gossiping to it;
// once the link is back, the sides merge into one mesh again.
func TestPartitionedSidesMerge(t *testing.T) {
	a1, ta1 := startCutMesh(t, "idcA", "a1")
	a2, ta2 := startCutMesh(t, "idcA", "a2", a1.GossipAddr())
	b1, tb1 := startCutMesh(t, "idcB", "b1", a1.GossipAddr())
	b2, tb2 := startCutMesh(t, "idcB", "b2", b1.GossipAddr())
	all := []*Mesh{a1, a2, b1, b2}
	alive := func(n int, ms ...*Mesh) bool {
		for _, m := range ms {
			if len(m.Alive(nil)) != n {
				return false
			}
		}
		return true
	}
	eventually(t, 20*time.Second, "4 alive members everywhere", func() bool { return alive(4, all...) })

	sideA, sideB := []string{a1.GossipAddr(), a2.GossipAddr()}, []string{b1.GossipAddr(), b2.GossipAddr()}
	cut := func(on bool) {
		ta1.set(sideB, on)
		ta2.set(sideB, on)
		tb1.set(sideA, on)
		tb2.set(sideA, on)
	}
	cut(true)
	defer func() {
		if t.Failed() {
			for _, m := range all {
				t.Logf("%s sees %+v (memberlist %d)", m.Self().Name, m.Members(), m.ml.NumMembers())
			}
		}
	}()
	eventually(t, 40*time.Second, "each side to see only itself", func() bool { return alive(2, all...) })
	eventually(t, 10*time.Second, "memberlist to forget the other side", func() bool {
		for _, m := range all {
			if m.ml.NumMembers() != 2 {
				return false
			}
		}
		return true
	})
	for _, m := range all {
		if ok, why := m.Ready(); !ok {
			t.Fatalf("%s not ready while its side has 2 members: %s", m.Self().Name, why)
		}
	}
	cut(false)
	took := eventually(t, 15*time.Second, "the two sides to merge", func() bool { return alive(4, all...) })
	t.Logf("partition healed: one mesh of 4 again %s later (rejoin backoff capped at 2s)", took)
}
