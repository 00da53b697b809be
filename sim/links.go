package sim

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// links puts a fault-injection proxy (Shopify's toxiproxy, embedded as a
// library) in front of every node's NATS gateway port, and advertises the
// proxy to the other IDCs. All gateway traffic into a node passes its
// proxy, so a partition or a slow link is real network behaviour: data is
// held back or delayed on live TCP connections. Gossip (memberlist, UDP)
// does not pass the proxies.
type links struct {
	mu      sync.Mutex
	server  *toxiproxy.ApiServer
	proxies map[string]*toxiproxy.Proxy // host → proxy
	ports   map[string]string           // host → upstream gateway address
}

func newLinks() *links {
	return &links{
		server:  toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()),
		proxies: map[string]*toxiproxy.Proxy{},
		ports:   map[string]string{},
	}
}

// gateway returns the gateway listen address of a host's node and the
// address to advertise (its proxy), creating the proxy on first use. A
// restarted node gets the same addresses.
func (l *links) gateway(host string) (listen, advertise string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.proxies[host]; p != nil {
		return l.ports[host], p.Listen, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", err
	}
	upstream := ln.Addr().String()
	ln.Close() // the node's gateway takes the port next
	p := toxiproxy.NewProxy(l.server, "gw-"+host, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return "", "", fmt.Errorf("gateway proxy of %s: %w", host, err)
	}
	l.proxies[host], l.ports[host] = p, upstream
	return upstream, p.Listen, nil
}

// set replaces the toxics on the proxies of hosts: none (heal), a black
// hole (partition), or a latency in ms each way.
func (l *links) set(hosts []string, partition bool, latencyMs int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range hosts {
		p := l.proxies[h]
		if p == nil {
			continue
		}
		p.Toxics.ResetToxics(context.Background())
		for _, stream := range []string{"upstream", "downstream"} {
			var doc string
			switch {
			case partition:
				doc = fmt.Sprintf(`{"name":"partition-%s","type":"timeout","stream":%q,"attributes":{"timeout":0}}`, stream, stream)
			case latencyMs > 0:
				doc = fmt.Sprintf(`{"name":"slow-%s","type":"latency","stream":%q,"attributes":{"latency":%d}}`, stream, stream, latencyMs)
			default:
				continue
			}
			if _, err := p.Toxics.AddToxicJson(strings.NewReader(doc)); err != nil {
				return fmt.Errorf("toxic on %s: %w", h, err)
			}
		}
	}
	return nil
}

func (l *links) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.proxies {
		p.Toxics.ResetToxics(context.Background())
		p.Stop()
	}
	l.proxies = map[string]*toxiproxy.Proxy{}
}
