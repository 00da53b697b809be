package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// localMesh is what scripts/local-mesh.sh starts (configs/mesh/).
var localMesh = map[string]struct{ idc, url string }{
	"a1": {"idc-a", "nats://127.0.1.1:4222"},
	"a2": {"idc-a", "nats://127.0.1.2:4222"},
	"b1": {"idc-b", "nats://127.0.1.3:4222"},
	"b2": {"idc-b", "nats://127.0.1.4:4222"},
}

// loopbackUsable reports whether TCP and UDP can bind ip (gossip uses
// both).
func loopbackUsable(ip string) error {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return err
	}
	l.Close()
	p, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return err
	}
	return p.Close()
}

// processGone reports whether pid has exited (a zombie waiting for its
// reaper counts as exited).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	s = s[strings.LastIndexByte(s, ')')+1:]
	f := strings.Fields(s)
	return len(f) == 0 || f[0] == "Z" || f[0] == "X"
}

// TestLocalMeshScript runs scripts/local-mesh.sh for real: a prebuilt
// binary, 2 IDCs x 2 hosts on 127.0.1.1-4, a state dir in a temp dir; the
// mesh must reach 4 alive members, and `stop` must end every node.
func TestLocalMeshScript(t *testing.T) {
	for i := 1; i <= 4; i++ {
		ip := "127.0.1." + strconv.Itoa(i)
		if err := loopbackUsable(ip); err != nil {
			t.Skipf("SKIPPED (not run): scripts/local-mesh.sh needs the loopback addresses 127.0.1.1-127.0.1.4 "+
				"(Linux routes all of 127.0.0.0/8 to lo); %s is not usable here: %v", ip, err)
		}
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatalf("scripts/local-mesh.sh needs bash: %v", err)
	}
	ctx := ctxT(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "mqmesh")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	state := filepath.Join(dir, "state")
	script := func(ctx context.Context, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "../../scripts/local-mesh.sh", args...)
		cmd.Env = append(os.Environ(), "MQMESH_BIN="+bin, "MQMESH_LOCAL_MESH_DIR="+state,
			"MQMESH_LOCAL_MESH_WAIT=30", "MQMESH_LOCAL_MESH_STOP_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// Whatever happens, stop what the script started (t.Context() has
	// ended by cleanup time).
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := script(ctx, "stop"); err != nil {
			t.Errorf("cleanup: local-mesh.sh stop: %v\n%s", err, out)
		}
	})
	logs := func() string {
		var b strings.Builder
		files, _ := filepath.Glob(filepath.Join(state, "*", "node.log"))
		for _, f := range files {
			content, _ := os.ReadFile(f)
			fmt.Fprintf(&b, "--- %s\n%s", f, content)
		}
		return b.String()
	}

	// The script makes the mesh's secrets in its state dir; the CLI
	// commands below use them through the environment.
	t.Setenv(SecretsEnv, filepath.Join(state, "secrets"))
	start := time.Now()
	out, err := script(ctx, "start", "--detach")
	if err != nil {
		t.Fatalf("local-mesh.sh start --detach: %v\n%s\n%s", err, out, logs())
	}
	returned := time.Since(start)
	for name, h := range localMesh {
		if !strings.Contains(out, h.url) {
			t.Errorf("start output does not name %s's URL %s:\n%s", name, h.url, out)
		}
	}
	for _, want := range []string{"enqueue --server", "stats --server", "mesh members --server", "local-mesh.sh stop"} {
		if !strings.Contains(out, want) {
			t.Errorf("start output does not show %q:\n%s", want, out)
		}
	}
	eventually(t, 30*time.Second, "4 alive members on a1", func() bool {
		m := members(t, localMesh["a1"].url)
		alive := 0
		for _, mb := range m.Members {
			// A secured node's URL says tls://.
			url := strings.Replace(mb.NATSClient, "tls://", "nats://", 1)
			if h, ok := localMesh[mb.Name]; ok && mb.IDC == h.idc && url == h.url && mb.State == "alive" {
				alive++
			}
		}
		return alive == len(localMesh)
	})
	up, _, _ := strings.Cut(out, "\n")
	t.Logf("start --detach returned after %s: %s", returned.Round(time.Millisecond), up)

	raw, err := os.ReadFile(filepath.Join(state, "pids"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("pid file line %q", line)
		}
		pid, err := strconv.Atoi(f[1])
		if err != nil || processGone(pid) {
			t.Fatalf("pid file line %q: not a running process", line)
		}
		pids = append(pids, pid)
	}
	if len(pids) != len(localMesh) {
		t.Fatalf("pid file lists %d nodes, want %d:\n%s", len(pids), len(localMesh), raw)
	}

	if out, err := script(ctx, "stop"); err != nil || !strings.Contains(out, "stopped") {
		t.Fatalf("local-mesh.sh stop: %v\n%s", err, out)
	}
	for _, pid := range pids {
		if !processGone(pid) {
			t.Errorf("node pid %d still running after local-mesh.sh stop", pid)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "pids")); !os.IsNotExist(err) {
		t.Errorf("pid file left behind after stop: %v", err)
	}
	// Every node left gracefully (SIGTERM) and exited cleanly: none was
	// killed, none printed an error.
	if l := logs(); strings.Count(l, "left the mesh") != len(localMesh) || strings.Contains(l, "\nmqmesh: ") {
		t.Errorf("want %d graceful leaves and no error in the logs:\n%s", len(localMesh), l)
	}
}
