package main

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mqmesh/mqmesh/mesh"
	"github.com/mqmesh/mqmesh/mqnode"
)

func TestLoadConfigMeshSection(t *testing.T) {
	cfg, err := loadConfig(writeFile(t, "node.yaml", `
name: a1
idc: east
listen: 10.0.0.1:4222
mesh:
  bind: 10.0.0.1
  port: 0
  advertise: 192.0.2.1
  seeds: [10.0.0.2:7946, 10.0.0.3:7946]
  profile: wan
  secret_key: AAECAwQFBgcICQoLDA0ODw==
  join_wait: 3s
  retain: 10m
  host: rack1-a1
  cluster_listen: 10.0.0.1:16222
  gateway_listen: 10.0.0.1:17222
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "a1" || cfg.Listen != "10.0.0.1:4222" {
		t.Fatalf("node keys %+v", cfg.Config)
	}
	m := cfg.Mesh
	if m == nil {
		t.Fatal("mesh section not decoded")
	}
	want := meshConfig{
		Config: mesh.Config{
			BindAddr: "10.0.0.1", BindPort: 0, AdvertiseAddr: "192.0.2.1",
			Seeds: []string{"10.0.0.2:7946", "10.0.0.3:7946"}, Profile: mesh.ProfileWAN,
			SecretKey: "AAECAwQFBgcICQoLDA0ODw==", JoinWait: 3 * time.Second, Retain: 10 * time.Minute,
		},
		Host: "rack1-a1", ClusterListen: "10.0.0.1:16222", GatewayListen: "10.0.0.1:17222",
	}
	if !equalMesh(*m, want) {
		t.Fatalf("mesh %+v\nwant %+v", *m, want)
	}
	if err := m.withDefaults(cfg.Listen).validate(cfg.WithDefaults()); err != nil {
		t.Fatal(err)
	}
}

// equalMesh compares mesh sections; no seeds and an empty list are equal.
func equalMesh(a, b meshConfig) bool {
	for _, m := range []*meshConfig{&a, &b} {
		if len(m.Seeds) == 0 {
			m.Seeds = nil
		}
	}
	return reflect.DeepEqual(a, b)
}

// The file gives the port as written (a port left out or 0 becomes
// mesh.DefaultBindPort with the defaults, -1 picks a free one); no section
// is a standalone node; an empty one joins with the defaults.
func TestLoadConfigMeshPortAndPresence(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		mesh       bool
		port       int
	}{
		{"no section", "idc: east\n", false, 0},
		{"null section", "mesh:\n", false, 0},
		{"empty section", "mesh: {}\n", true, 0},
		{"port left out", "mesh:\n  profile: local\n", true, 0},
		{"port 0", "mesh:\n  port: 0\n", true, 0},
		{"free port", "mesh:\n  port: -1\n", true, mesh.RandomPort},
		{"port set", "mesh:\n  port: 8946\n", true, 8946},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadConfig(writeFile(t, "node.yaml", tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if (cfg.Mesh != nil) != tc.mesh {
				t.Fatalf("mesh section %+v, want present %v", cfg.Mesh, tc.mesh)
			}
			if tc.mesh && cfg.Mesh.BindPort != tc.port {
				t.Fatalf("port %d, want %d", cfg.Mesh.BindPort, tc.port)
			}
		})
	}
}

func TestLoadConfigMeshErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown mesh key", "idc: east\nmesh:\n  port: 1\n  seed: [a:1]\n", []string{"line 4", "field seed not found in the mesh section"}},
		{"node key in mesh", "mesh:\n  listen: 127.0.0.1:1\n", []string{"listen"}},
		{"mesh key at top", "seeds: [a:1]\n", []string{"seeds"}},
		{"duration without unit", "mesh:\n  join_wait: 5\n", []string{"line 2", "with a unit"}},
		{"port not a number", "mesh:\n  port: http\n", []string{"line 2", "http"}},
		{"seeds not a list", "mesh:\n  seeds:\n    a: 1\n", []string{"line 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(writeFile(t, "node.yaml", tc.yaml))
			wantErr(t, err, tc.want...)
		})
	}
}

func TestNodeMeshDefaultsFromListen(t *testing.T) {
	cfg := printConfig(t, "--mesh", "--listen", "10.1.2.3:4222")
	want := meshConfig{
		Config: mesh.Config{BindAddr: "10.1.2.3", BindPort: 7946, Profile: mesh.ProfileLAN,
			JoinWait: mesh.DefaultJoinWait, Retain: mesh.DefaultRetain},
		Host: mqnode.DefaultName(), ClusterListen: "10.1.2.3:6222", GatewayListen: "10.1.2.3:7222",
	}
	if cfg.Mesh == nil || !equalMesh(*cfg.Mesh, want) {
		t.Fatalf("mesh %+v\nwant %+v", cfg.Mesh, want)
	}
	// The node's own default listen address gives the loopback defaults.
	cfg = printConfig(t, "--seed", "127.0.0.9:7946")
	if m := cfg.Mesh; m == nil || m.BindAddr != "127.0.0.1" || m.ClusterListen != "127.0.0.1:6222" || !slices.Equal(m.Seeds, []string{"127.0.0.9:7946"}) {
		t.Fatalf("a --seed alone: mesh %+v", m)
	}
}

func TestNodeWithoutMeshStaysStandalone(t *testing.T) {
	out := mustCLI(t, "node", "--print-config")
	if strings.Contains(out, "mesh") {
		t.Fatalf("standalone --print-config mentions the mesh:\n%s", out)
	}
	file := writeFile(t, "node.yaml", "mesh:\n  profile: local\n")
	if cfg := printConfig(t, "--config", file, "--mesh=false"); cfg.Mesh != nil {
		t.Fatalf("--mesh=false kept the file's mesh section: %+v", cfg.Mesh)
	}
}

func TestNodeMeshFlagsOverrideFileOnlyWhenSet(t *testing.T) {
	file := writeFile(t, "node.yaml", `
listen: 127.0.0.2:4222
mesh:
  port: 8000
  seeds: [127.0.0.3:7946]
  profile: wan
  host: from-file
  cluster_listen: 127.0.0.2:9222
`)
	cfg := printConfig(t, "--config", file)
	if m := cfg.Mesh; m.BindPort != 8000 || m.Profile != mesh.ProfileWAN || m.Host != "from-file" ||
		m.BindAddr != "127.0.0.2" || m.ClusterListen != "127.0.0.2:9222" || m.GatewayListen != "127.0.0.2:7222" {
		t.Fatalf("file only: mesh %+v", m)
	}
	cfg = printConfig(t, "--config", file, "--seed", "127.0.0.4:1,127.0.0.5:2", "--seed", "127.0.0.6:3",
		"--gossip-port", "-1", "--gossip-bind", "127.0.0.7", "--gossip-advertise", "127.0.0.8", "--profile", "local",
		"--join-wait", "2s", "--gossip-retain", "5m", "--host", "from-flag",
		"--cluster-listen", "127.0.0.2:0", "--gateway-listen", "127.0.0.2:0")
	want := meshConfig{
		Config: mesh.Config{BindAddr: "127.0.0.7", BindPort: mesh.RandomPort, AdvertiseAddr: "127.0.0.8",
			Seeds: []string{"127.0.0.4:1", "127.0.0.5:2", "127.0.0.6:3"}, Profile: mesh.ProfileLocal,
			JoinWait: 2 * time.Second, Retain: 5 * time.Minute},
		Host: "from-flag", ClusterListen: "127.0.0.2:0", GatewayListen: "127.0.0.2:0",
	}
	if !equalMesh(*cfg.Mesh, want) {
		t.Fatalf("flags: mesh %+v\nwant %+v", *cfg.Mesh, want)
	}
}

func TestNodeMeshConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"every interface without advertise", []string{"--mesh", "--listen", "0.0.0.0:4222"}, []string{"bind 0.0.0.0", "--gossip-advertise"}},
		{"no listener", []string{"--mesh", "--listen", "none"}, []string{"mesh", `not "none"`}},
		{"bad profile", []string{"--profile", "fast"}, []string{"mesh config", `profile "fast"`}},
		{"bad seed", []string{"--seed", "nowhere"}, []string{`seed "nowhere"`}},
		{"bad bind", []string{"--gossip-bind", "localhost"}, []string{`bind "localhost"`}},
		{"bad gossip port", []string{"--gossip-port", "70000"}, []string{"port 70000"}},
		{"bad cluster listen", []string{"--cluster-listen", "6222"}, []string{`cluster_listen "6222"`}},
		{"bad gateway port", []string{"--gateway-listen", "127.0.0.1:x"}, []string{`gateway_listen "127.0.0.1:x"`, "bad port"}},
		{"bad secret key", []string{"--config", writeFile(t, "k.yaml", "mesh:\n  secret_key: c2hvcnQ=\n")}, []string{"secret_key", "5 bytes"}},
		{"unknown mesh key", []string{"--config", writeFile(t, "u.yaml", "mesh:\n  seed: [a:1]\n")}, []string{"seed"}},
		{"mesh off with mesh flags", []string{"--mesh=false", "--seed", "127.0.0.1:7946"}, []string{"--mesh=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := cli(t, "", append([]string{"node", "--print-config"}, tc.args...)...)
			wantErr(t, err, tc.want...)
			if out != "" {
				t.Fatalf("stdout %q on error", out)
			}
		})
	}
	t.Run("bad key in the environment", func(t *testing.T) {
		t.Setenv(mesh.GossipKeyEnv, "not base64!")
		_, _, err := cli(t, "", "node", "--print-config", "--mesh")
		wantErr(t, err, "secret_key", "not base64")
	})
}

// Every key of the mesh section has a flag, except secret_key (a key must
// not show in a process list).
func TestMeshFlagsCoverEveryKey(t *testing.T) {
	b, err := yaml.Marshal(newMeshConfig())
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(b, &keys); err != nil {
		t.Fatal(err)
	}
	flagOf := map[string]string{
		"bind": "gossip-bind", "port": "gossip-port", "advertise": "gossip-advertise", "seeds": "seed",
		"profile": "profile", "join_wait": "join-wait", "retain": "gossip-retain", "host": "host",
		"cluster_listen": "cluster-listen", "gateway_listen": "gateway-listen", "secret_key": "",
	}
	fs := newNodeCommand().Flags()
	for key := range keys {
		name, ok := flagOf[key]
		if !ok {
			t.Errorf("mesh key %s: no flag known (add one to bindMeshFlags and here)", key)
			continue
		}
		if name != "" && fs.Lookup(name) == nil {
			t.Errorf("mesh key %s has no flag --%s", key, name)
		}
	}
	if fs.Lookup("secret-key") != nil || fs.Lookup("gossip-key") != nil {
		t.Error("a gossip key must not be a flag")
	}
}

// The example mesh: one file per host, every file loads strictly and
// validates, hosts have distinct loopback addresses, and every seed names
// the gossip address of a host started before it (the order of
// scripts/local-mesh.sh).
func TestExampleMeshConfigs(t *testing.T) {
	order := []string{"idc-a-host1", "idc-a-host2", "idc-b-host1", "idc-b-host2"}
	files, err := filepath.Glob("../../configs/mesh/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(order) {
		t.Fatalf("configs/mesh has %v, want %v", files, order)
	}
	script, err := os.ReadFile("../../scripts/local-mesh.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), "hosts=("+strings.Join(order, " ")+")") {
		t.Fatalf("scripts/local-mesh.sh does not start %v in this order", order)
	}
	started := map[string]bool{}
	ips := map[string]bool{}
	idcs := map[string]int{}
	for i, host := range order {
		path := "../../configs/mesh/" + host + ".yaml"
		cfg := printConfig(t, "--config", path) // validates
		m := cfg.Mesh
		if m == nil {
			t.Fatalf("%s: no mesh section", path)
		}
		ip, _, err := net.SplitHostPort(cfg.Listen)
		if err != nil || !strings.HasPrefix(ip, "127.0.1.") || ips[ip] {
			t.Fatalf("%s: listen %q: want a distinct 127.0.1.x address", path, cfg.Listen)
		}
		ips[ip] = true
		for _, addr := range []string{m.BindAddr + ":0", m.ClusterListen, m.GatewayListen} {
			if h, _, _ := net.SplitHostPort(addr); h != ip {
				t.Fatalf("%s: %s is not on the host's address %s", path, addr, ip)
			}
		}
		if m.Host != host {
			t.Fatalf("%s: host %q, want %q", path, m.Host, host)
		}
		if i == 0 && len(m.Seeds) != 0 {
			t.Fatalf("%s: the first host starts the mesh and names no seed, got %v", path, m.Seeds)
		}
		if i > 0 && (len(m.Seeds) != 1 || !started[m.Seeds[0]]) {
			t.Fatalf("%s: seeds %v: want one host started before it", path, m.Seeds)
		}
		started[net.JoinHostPort(m.BindAddr, "7946")] = m.BindPort == 7946
		idcs[cfg.IDC]++
	}
	if len(idcs) != 2 || idcs["idc-a"] != 2 || idcs["idc-b"] != 2 {
		t.Fatalf("IDCs %v: want 2 x 2", idcs)
	}
}
