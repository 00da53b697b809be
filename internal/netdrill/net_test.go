package netdrill

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Network of the drill: a bridge in the root namespace and one namespace
// per host, every name prefixed with prefix.
const (
	subnet    = "10.213.77"
	bridgeIP  = subnet + ".1"
	prefixLen = "/24"
)

// prefix starts the name of every namespace, link, mount and directory the
// drill creates: "dep", or $NETDRILL_PREFIX (at most 6 characters: link
// names have 15), so that a drill run by one engineer on a shared machine
// is told apart from another's. Drills still run one at a time (the
// subnet is fixed; see lockDrill).
var prefix = func() string {
	if p := os.Getenv("NETDRILL_PREFIX"); p != "" && len(p) <= 6 {
		return p
	}
	return "dep"
}()

var bridge = prefix + "-br"

// host is one simulated host: its namespace, address and IDC.
type host struct {
	name, idc, ip string
}

func (h host) ns() string       { return prefix + "-" + h.name }
func (h host) vethRoot() string { return prefix + "-" + h.name + "-r" }
func (h host) vethNS() string   { return prefix + "-" + h.name + "-n" }

// run runs a command and returns its combined output, failing the test
// on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// try runs a command and ignores its failure (cleanup).
func try(name string, args ...string) {
	_ = exec.Command(name, args...).Run()
}

// inNS runs a command in h's namespace.
func inNS(t testing.TB, h host, name string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", h.ns(), name}, args...)...)
}

// needNetns skips the test when network namespaces cannot be created, and
// installs iptables when it is missing.
func needNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netdrill: needs root to create network namespaces (run the tests as root, as CI does)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		aptInstall(t, "iproute2")
	}
	probe := prefix + "-probe"
	try("ip", "netns", "del", probe)
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("netdrill: network namespaces unavailable here (ip netns add: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	try("ip", "netns", "del", probe)
	if _, err := exec.LookPath("iptables"); err != nil {
		aptInstall(t, "iptables")
	}
}

// aptInstall installs a Debian package (CI machines have apt, not every
// tool).
func aptInstall(t *testing.T, pkg string) {
	t.Helper()
	t.Logf("netdrill: installing %s with apt-get", pkg)
	if out, err := exec.Command("apt-get", "update").CombinedOutput(); err != nil {
		t.Fatalf("apt-get update (to install %s): %v\n%s", pkg, err, out)
	}
	cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", pkg)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get install %s: %v\n%s", pkg, err, out)
	}
}

// teardown removes everything setup creates (safe on a partial setup).
func teardown(hosts []host) {
	for _, h := range hosts {
		try("ip", "netns", "del", h.ns())
		try("ip", "link", "del", h.vethRoot())
	}
	try("ip", "link", "del", bridge)
}

// setup creates the bridge and a namespace per host, each with a veth
// pair: one end on the bridge, the other in the namespace with the host's
// address.
func setup(t *testing.T, hosts []host) {
	t.Helper()
	teardown(hosts) // what a crashed run left
	t.Cleanup(func() { teardown(hosts) })
	run(t, "ip", "link", "add", bridge, "type", "bridge")
	run(t, "ip", "addr", "add", bridgeIP+prefixLen, "dev", bridge)
	run(t, "ip", "link", "set", bridge, "up")
	for _, h := range hosts {
		run(t, "ip", "netns", "add", h.ns())
		run(t, "ip", "link", "add", h.vethRoot(), "type", "veth", "peer", "name", h.vethNS())
		run(t, "ip", "link", "set", h.vethRoot(), "master", bridge)
		run(t, "ip", "link", "set", h.vethRoot(), "up")
		run(t, "ip", "link", "set", h.vethNS(), "netns", h.ns())
		inNS(t, h, "ip", "link", "set", "lo", "up")
		inNS(t, h, "ip", "addr", "add", h.ip+prefixLen, "dev", h.vethNS())
		inNS(t, h, "ip", "link", "set", h.vethNS(), "up")
	}
}

// partition drops every packet between the two groups (both ways, on the
// sending side, as a cut inter-IDC link would).
func partition(t *testing.T, a, b []host) {
	t.Helper()
	for _, x := range a {
		for _, y := range b {
			inNS(t, x, "iptables", "-A", "OUTPUT", "-d", y.ip, "-j", "DROP")
			inNS(t, y, "iptables", "-A", "OUTPUT", "-d", x.ip, "-j", "DROP")
		}
	}
}

// heal removes every packet filter and queueing discipline of the hosts.
func heal(t *testing.T, hosts []host) {
	t.Helper()
	for _, h := range hosts {
		inNS(t, h, "iptables", "-F", "OUTPUT")
		_ = exec.Command("ip", "netns", "exec", h.ns(), "tc", "qdisc", "del", "dev", h.vethNS(), "root").Run()
	}
}

// slowLink makes h's link slow and lossy: 5 % loss (iptables statistic),
// and 80 ms ± 20 ms delay with netem, or where the kernel lacks netem a
// 1 Mbit/s token bucket. It returns what it applied.
func slowLink(t *testing.T, h host) string {
	t.Helper()
	inNS(t, h, "iptables", "-A", "OUTPUT", "-m", "statistic", "--mode", "random", "--probability", "0.05", "-j", "DROP")
	if exec.Command("ip", "netns", "exec", h.ns(), "tc", "qdisc", "add", "dev", h.vethNS(), "root", "netem", "delay", "80ms", "20ms").Run() == nil {
		return "5% loss, 80±20 ms delay (netem)"
	}
	inNS(t, h, "tc", "qdisc", "add", "dev", h.vethNS(), "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "400ms")
	return "5% loss, 1 Mbit/s token bucket (this kernel has no netem)"
}

func (h host) String() string { return fmt.Sprintf("%s(%s,%s)", h.name, h.idc, h.ip) }
