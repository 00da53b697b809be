package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/mqnode"
)

func TestSecretsInitNeverOverwrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	out := mustCLI(t, "secrets", "init", dir)
	if !strings.Contains(out, dir) {
		t.Fatalf("output %q", out)
	}
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	_, _, err := cli(t, "", "secrets", "init", dir)
	wantErr(t, err, "already exist", "--force")
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); string(again) != string(ca) {
		t.Fatal("ca.crt overwritten without --force")
	}
	mustCLI(t, "secrets", "init", dir, "--force")
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); string(again) == string(ca) {
		t.Fatal("--force did not rotate")
	}
}

// TestSecuredNodeFromTheCLI: the CLI checks. A node on 0.0.0.0
// with --secrets starts; without it refuses (naming --secrets) unless
// --insecure; enqueue with --secrets works, anonymous does not; dlq purge
// as producer is refused with PERMISSION_DENIED.
func TestSecuredNodeFromTheCLI(t *testing.T) {
	t.Setenv(SecretsEnv, "")
	dir := secretstest.Dir(t)
	line, stop := runNode(t, "--secrets", dir, "--data", t.TempDir(), "--listen", "0.0.0.0:0", "--name", "n1", "--json", "--log-level", "error")
	var ready nodeReadyJSON
	if err := json.Unmarshal([]byte(line), &ready); err != nil {
		t.Fatal(line, err)
	}
	url := strings.Replace(ready.URL, "0.0.0.0", "127.0.0.1", 1)

	_, _, err := cli(t, "", "node", "--data", t.TempDir(), "--listen", "0.0.0.0:0", "--name", "n2", "--log-level", "error")
	wantErr(t, err, "refusing to start", "0.0.0.0:0", "--secrets", "--insecure")
	_, _, err = cli(t, "", "node", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--name", "n3", "--seed", "10.0.0.1:7946", "--gossip-bind", "0.0.0.0", "--gossip-advertise", "10.0.0.9", "--log-level", "error")
	wantErr(t, err, "refusing to start", "--secrets")

	out := mustCLI(t, "enqueue", "--secrets", dir, "--server", url, "--queue", "jobs", "--payload", "hi")
	if !strings.HasPrefix(out, "enqueued 1 task(s) on jobs") {
		t.Fatalf("enqueue printed %q", out)
	}
	_, _, err = cli(t, "", "enqueue", "--server", url, "--queue", "jobs", "--payload", "hi", "--timeout", "3s")
	wantErr(t, err, "tls", "certificate") // an anonymous client does not even trust the node
	st := mustJSON[statsJSON](t, "stats", "--secrets", dir, "--server", url, "--json")
	if len(st.Queues) != 1 || st.Queues[0].Ready != 1 {
		t.Fatalf("stats %+v", st)
	}
	_, _, err = cli(t, "", "dlq", "purge", "--secrets", dir, "--role", "producer", "--server", url, "--queue", "jobs", "--all")
	if !errors.Is(err, mqnode.ErrPermissionDenied) {
		t.Fatalf("dlq purge as producer: %v, want PERMISSION_DENIED", err)
	}
	_, _, err = cli(t, "", "stats", "--secrets", dir, "--role", "root", "--server", url)
	wantErr(t, err, "role", "root")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestInsecureNodeStartsWithAWarning(t *testing.T) {
	t.Setenv(SecretsEnv, "")
	line, stop := runNode(t, "--insecure", "--data", t.TempDir(), "--listen", "0.0.0.0:0", "--name", "n1", "--json", "--log-level", "warn")
	if !strings.Contains(line, `"name":"n1"`) {
		t.Fatalf("ready %q", line)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestGossipKeyCommands(t *testing.T) {
	dir := secretstest.Dir(t)
	out := mustCLI(t, "secrets", "gossip-key", "add", dir)
	if !strings.HasPrefix(out, "gossip keyring (primary first): ") || len(strings.Fields(out)) != 6 {
		t.Fatalf("add: %q", out)
	}
	first, second := strings.Fields(out)[4], strings.Fields(out)[5]
	out = mustCLI(t, "secrets", "gossip-key", "use", dir)
	if f := strings.Fields(out); f[4] != second || f[5] != first {
		t.Fatalf("use did not make the new key primary: %q", out)
	}
	out = mustCLI(t, "secrets", "gossip-key", "remove", dir)
	if f := strings.Fields(out); len(f) != 5 || f[4] != second {
		t.Fatalf("remove: %q", out)
	}
	_, _, err := cli(t, "", "secrets", "gossip-key", "use", dir)
	wantErr(t, err, "one key only")
	st, err := os.Stat(filepath.Join(dir, "gossip.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("gossip.key mode %v %v", st.Mode().Perm(), err)
	}
}

func TestQueueDeleteCommand(t *testing.T) {
	t.Setenv(SecretsEnv, "")
	n, url := startNode(t)
	c := nodeClient(t, n)
	if _, _, err := c.Pull(ctxT(t), mqnode.PullRequest{Queue: "scratch"}); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, "enqueue", "--server", url, "--queue", "busy", "--payload", "x")
	out := mustJSON[queueDeleteJSON](t, "queue", "delete", "--server", url, "--queue", "scratch", "--json")
	if !out.Deleted || out.Queue != "scratch" {
		t.Fatalf("%+v", out)
	}
	_, _, err := cli(t, "", "queue", "delete", "--server", url, "--queue", "busy")
	wantErr(t, err, "not empty")
	_, _, err = cli(t, "", "queue", "delete", "--server", url, "--queue", "scratch")
	wantErr(t, err, "unknown queue")
}
