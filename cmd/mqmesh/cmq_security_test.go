package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/mqmesh/mqmesh/internal/secrets/secretstest"
	"github.com/mqmesh/mqmesh/mqnode"
)

// With --secrets, topic and replay commands run as admin (their default
// role); a producer enqueues to topic:T but may neither replay nor change
// topics.
func TestSecuredReplayAndTopicCommands(t *testing.T) {
	t.Setenv(SecretsEnv, "")
	dir := secretstest.Dir(t)
	line, stop := runNode(t, "--secrets", dir, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--name", "n1", "--json",
		"--log-level", "error", "--keep-settled", "1h")
	defer stop()
	var ready nodeReadyJSON
	if err := json.Unmarshal([]byte(line), &ready); err != nil {
		t.Fatal(line, err)
	}
	srv := []string{"--secrets", dir, "--server", ready.URL}
	mustCLI(t, append([]string{"topic", "create", "orders", "--sub", "jobs"}, srv...)...)
	mustCLI(t, append([]string{"enqueue", "--queue", "topic:orders", "--payload", "hi"}, srv...)...) // as producer
	r := mustJSON[replayJSON](t, append([]string{"replay", "--queue", "jobs", "--since", "1m", "--dry-run", "--json"}, srv...)...)
	if len(r.Nodes) != 1 || r.Nodes[0].Error != "" {
		t.Fatalf("admin replay: %+v", r)
	}
	for _, args := range [][]string{
		{"replay", "--queue", "jobs", "--since", "1m", "--role", "producer"},
		{"topic", "create", "t", "--sub", "q", "--role", "producer"},
		{"topic", "delete", "orders", "--role", "worker"},
	} {
		_, _, err := cli(t, "", append(args, srv...)...)
		if err == nil || (!errors.Is(err, mqnode.ErrPermissionDenied) && !strings.Contains(strings.ToLower(err.Error()), "permission denied")) {
			t.Errorf("%v: %v, want PERMISSION_DENIED", args, err)
		}
	}
}
