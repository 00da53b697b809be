package mesh

import (
	"net/url"
	"slices"
	"strings"
)

// Topology is the NATS topology a node derives from membership: routes to
// the other nodes of its IDC (one NATS cluster per IDC, named after it) and
// gateways to the other IDCs (the clusters joined into one supercluster).
type Topology struct {
	Routes   []*url.URL
	Gateways map[string][]*url.URL
}

// TopologyFor computes self's topology from members: a pure function of
// the membership (alive nodes that have gossiped their NATS addresses).
// NATS needs only one reachable route or gateway URL to learn the rest, so
// listing every known one is for resilience, not correctness.
func TopologyFor(self Meta, members []Member) Topology {
	t := Topology{Gateways: map[string][]*url.URL{}}
	for _, m := range members {
		if m.State != StateAlive || m.Meta.Role != RoleNode || m.Meta.Leaving {
			continue
		}
		if m.Meta.IDC == self.IDC {
			if m.Meta.Name == self.Name || m.Meta.NATSCluster == "" {
				continue
			}
			if u, err := url.Parse(m.Meta.NATSCluster); err == nil {
				t.Routes = append(t.Routes, u)
			}
			continue
		}
		if m.Meta.NATSGateway == "" {
			continue
		}
		if u, err := url.Parse(m.Meta.NATSGateway); err == nil {
			t.Gateways[m.Meta.IDC] = append(t.Gateways[m.Meta.IDC], u)
		}
	}
	slices.SortFunc(t.Routes, func(a, b *url.URL) int { return strings.Compare(a.String(), b.String()) })
	for _, us := range t.Gateways {
		slices.SortFunc(us, func(a, b *url.URL) int { return strings.Compare(a.String(), b.String()) })
	}
	return t
}

func sameURLs(a, b []*url.URL) bool {
	return slices.EqualFunc(a, b, func(x, y *url.URL) bool { return x.String() == y.String() })
}
