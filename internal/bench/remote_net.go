package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// netnsLink is a network namespace joined to this one by a veth pair:
// host side hostAddr, namespace side nsAddr (a /30). Names start with
// "perf" so they do not collide with other users of the host.
type netnsLink struct {
	ns, hostIf       string
	hostAddr, nsAddr string
	ip               string // path of ip(8)
}

// newNetnsLink creates the namespace and the veth pair; it needs root and
// ip(8). The error says why it could not.
func newNetnsLink() (*netnsLink, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("network namespaces need root")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, errors.New("ip(8) not found (apt package iproute2)")
	}
	id := os.Getpid() % 250
	l := &netnsLink{
		ns: fmt.Sprintf("perf-bench-%d", os.Getpid()), hostIf: fmt.Sprintf("perf-h%d", os.Getpid()),
		hostAddr: fmt.Sprintf("10.213.%d.1", id), nsAddr: fmt.Sprintf("10.213.%d.2", id), ip: ip,
	}
	nsIf := fmt.Sprintf("perf-n%d", os.Getpid())
	steps := [][]string{
		{"netns", "add", l.ns},
		{"link", "add", l.hostIf, "type", "veth", "peer", "name", nsIf},
		{"link", "set", nsIf, "netns", l.ns},
		{"addr", "add", l.hostAddr + "/30", "dev", l.hostIf},
		{"link", "set", l.hostIf, "up"},
		{"netns", "exec", l.ns, "ip", "addr", "add", l.nsAddr + "/30", "dev", nsIf},
		{"netns", "exec", l.ns, "ip", "link", "set", nsIf, "up"},
		{"netns", "exec", l.ns, "ip", "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command(ip, s...).CombinedOutput(); err != nil {
			l.close()
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return l, nil
}

// wrap makes launch start its command inside the namespace.
func (l *netnsLink) wrap(launch Launcher) Launcher {
	return func(args []string) (*exec.Cmd, error) {
		cmd, err := launch(args)
		if err != nil {
			return nil, err
		}
		w := exec.Command(l.ip, append([]string{"netns", "exec", l.ns, cmd.Path}, cmd.Args[1:]...)...)
		w.Env, w.Dir = cmd.Env, cmd.Dir
		return w, nil
	}
}

// close deletes the namespace (and with it the veth pair).
func (l *netnsLink) close() {
	_ = exec.Command(l.ip, "link", "del", l.hostIf).Run()
	_ = exec.Command(l.ip, "netns", "del", l.ns).Run()
}

// delayLink is a TCP proxy (toxiproxy, as sim uses) that adds rtt to every
// round trip: rtt/2 each way, in whole milliseconds (toxiproxy's unit;
// below 2 ms, all of it on the replies). It stands in for tc netem, which
// not every kernel has.
type delayLink struct {
	server *toxiproxy.ApiServer
	proxy  *toxiproxy.Proxy
}

func newDelayLink(upstream string, rtt time.Duration) (*delayLink, error) {
	s := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(s, "bench-remote", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, err
	}
	ms := rtt.Milliseconds()
	up, down := ms/2, ms-ms/2
	for stream, lat := range map[string]int64{"upstream": up, "downstream": down} {
		if lat == 0 {
			continue
		}
		doc := fmt.Sprintf(`{"name":"rtt-%s","type":"latency","stream":%q,"attributes":{"latency":%d}}`, stream, stream, lat)
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(doc)); err != nil {
			p.Stop()
			return nil, err
		}
	}
	return &delayLink{server: s, proxy: p}, nil
}

func (d *delayLink) url() string { return "nats://" + d.proxy.Listen }

func (d *delayLink) close() {
	d.proxy.Toxics.ResetToxics(context.Background())
	d.proxy.Stop()
}
