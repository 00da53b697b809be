package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// eventually polls cond until it holds, failing the test after within.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", within, what)
		case <-tick.C:
		}
	}
	return time.Since(start)
}

// meshFlags make a node a mesh member on 127.0.0.1 with free ports (gossip,
// routes, gateways) and the local gossip profile.
var meshFlags = []string{"--gossip-port", "0", "--profile", "local",
	"--cluster-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"}

// meshNode runs `mqmesh node args...` in-process, with a temp data dir and
// a free client port on 127.0.0.1; args must make it a mesh member. It
// returns the parsed ready line and stop.
func meshNode(t *testing.T, extra ...string) (nodeReadyJSON, func() error) {
	t.Helper()
	args := append([]string{"--data", t.TempDir(), "--json", "--log-level", "warn", "--listen", "127.0.0.1:0"}, extra...)
	line, stop := runNode(t, args...)
	var ready nodeReadyJSON
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ready); err != nil {
		t.Fatalf("ready line %q: %v", line, err)
	}
	if !strings.HasPrefix(ready.Gossip, "127.0.0.1:") || strings.HasSuffix(ready.Gossip, ":0") {
		t.Fatalf("ready line %q: want the gossip address on 127.0.0.1 with its real port", line)
	}
	return ready, stop
}

// members runs `mqmesh mesh members --json` against url.
func members(t *testing.T, url string) membersJSON {
	t.Helper()
	return mustJSON[membersJSON](t, "mesh", "members", "--server", url, "--json")
}

// states maps member name to state.
func states(m membersJSON) map[string]string {
	out := map[string]string{}
	for _, mb := range m.Members {
		out[mb.Name] = mb.State
	}
	return out
}

// Two `mqmesh node` commands in two IDCs form a mesh: one from a config
// file with a mesh section, one from flags naming the first as its seed.
// Both see both alive; a graceful stop is seen as a leave.
func TestMeshNodesFormAMesh(t *testing.T) {
	file := writeFile(t, "a1.yaml", `
name: a1
idc: idcA
mesh:
  host: host-a
  port: 0
  profile: local
  cluster_listen: 127.0.0.1:0
  gateway_listen: 127.0.0.1:0
`)
	a, _ := meshNode(t, "--config", file)
	b, stopB := meshNode(t, append([]string{"--name", "b1", "--idc", "idcB", "--host", "host-b", "--seed", a.Gossip}, meshFlags...)...)

	took := eventually(t, 20*time.Second, "both nodes to list both alive", func() bool {
		for _, url := range []string{a.URL, b.URL} {
			s := states(members(t, url))
			if len(s) != 2 || s["a1"] != "alive" || s["b1"] != "alive" {
				return false
			}
		}
		return true
	})
	t.Logf("2 members alive on both nodes %s after the second node was ready", took)

	got := members(t, a.URL)
	if got.Self != "node:idcA:a1" || len(got.Members) != 2 {
		t.Fatalf("members %+v", got)
	}
	want := map[string]struct{ idc, host, url, gossip string }{
		"a1": {"idcA", "host-a", a.URL, a.Gossip},
		"b1": {"idcB", "host-b", b.URL, b.Gossip},
	}
	for i, m := range got.Members {
		w := want[m.Name]
		if m.ID != "node:"+w.idc+":"+m.Name || m.Role != "node" || m.IDC != w.idc || m.Host != w.host ||
			m.NATSClient != w.url || m.GossipAddr != w.gossip || m.Node != "" || m.Since.IsZero() ||
			!strings.HasPrefix(m.NATSCluster, "nats-route://127.0.0.1:") || !strings.HasPrefix(m.NATSGateway, "nats://127.0.0.1:") ||
			m.Version == "" {
			t.Fatalf("member %d: %+v, want %+v", i, m, w)
		}
	}
	if got.Members[0].Name != "a1" {
		t.Fatalf("members not sorted by IDC: %+v", got.Members)
	}

	// The table: a header and one row per member.
	out := mustCLI(t, "mesh", "members", "--server", b.URL)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "ROLE IDC HOST NAME STATE SINCE NATS GOSSIP REPLICA(BUDDY/STATE/LAG)" {
		t.Fatalf("table:\n%s", out)
	}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 9 || f[8] != "-" || f[0] != "node" || f[4] != "alive" || f[6] != want[f[3]].url || f[7] != want[f[3]].gossip {
			t.Fatalf("table row %q", l)
		}
	}

	// A graceful stop (what SIGTERM does) announces the leave.
	if err := stopB(); err != nil {
		t.Fatalf("stop b1: %v", err)
	}
	took = eventually(t, 10*time.Second, "a1 to list b1 as left", func() bool {
		return states(members(t, a.URL))["b1"] == "left"
	})
	t.Logf("b1's leave seen by a1 %s after its stop returned", took)
}

func TestMeshNodeTextReadyLine(t *testing.T) {
	line, stop := runNode(t, append([]string{"--data", t.TempDir(), "--listen", "127.0.0.1:0", "--name", "n1",
		"--mesh", "--log-level", "warn"}, meshFlags...)...)
	if !strings.HasPrefix(line, "mqmesh node n1 (idc local) ready at nats://127.0.0.1:") ||
		!strings.Contains(line, ", mesh gossip at 127.0.0.1:") || strings.Count(line, "\n") != 1 {
		t.Fatalf("ready line %q", line)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestMeshMembersOfStandaloneNode(t *testing.T) {
	_, url := startNode(t)
	out, _, err := cli(t, "", "mesh", "members", "--server", url, "--json")
	wantErr(t, err, "node local/n1", "not a mesh member")
	if !errors.Is(err, errNotMeshMember) {
		t.Fatalf("error %v does not wrap errNotMeshMember", err)
	}
	if out != "" {
		t.Fatalf("stdout %q on error", out)
	}
}

func TestMeshMembersErrors(t *testing.T) {
	_, _, err := cli(t, "", "mesh", "members", "--server", "nats://127.0.0.1:1", "--timeout", "1s")
	wantErr(t, err, "connect")
	_, _, err = cli(t, "", "mesh", "members", "--timeout", "0s")
	wantErr(t, err, "--timeout")
	_, _, err = cli(t, "", "mesh", "members", "extra")
	wantErr(t, err, "unknown command")
}

// A mesh node that cannot join fails with a clear error and prints no
// ready line: its gossip port is taken, or no seed answers.
func TestMeshNodeStartFails(t *testing.T) {
	a, stop := meshNode(t, append([]string{"--name", "a1", "--mesh"}, meshFlags...)...)
	_, port, _ := strings.Cut(a.Gossip, ":")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"gossip port taken", []string{"--mesh", "--gossip-port", port}, []string{"gossip on 127.0.0.1:" + port}},
		{"no seed answers", []string{"--seed", "127.0.0.1:1", "--join-wait", "300ms", "--gossip-port", "0"}, []string{"join", "127.0.0.1:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"node", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--name", "a2", "--log-level", "error",
				"--cluster-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"}, tc.args...)
			out, _, err := cli(t, "", args...)
			wantErr(t, err, tc.want...)
			if out != "" {
				t.Fatalf("stdout %q from a node that did not start", out)
			}
		})
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
