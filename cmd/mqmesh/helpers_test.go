package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mqmesh/mqmesh/internal/testlog"
	"github.com/mqmesh/mqmesh/mqnode"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Badger's and ristretto's process-wide goroutines outlive a DB.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		// memberlist's suspicion timers may fire once more after Shutdown
		// (as in the mesh package's tests).
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).suspectNode.func1"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
	)
}

// ctxT returns a context that ends with the test or after a minute.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testLogger routes logs to the test's output, shown on failure or -v.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// startNode starts a real node named n1 in a temp dir on a random loopback
// port; it stops at cleanup. It returns the node and its client URL.
func startNode(t testing.TB) (*mqnode.Node, string) {
	t.Helper()
	n, err := mqnode.New(mqnode.Config{
		Name: "n1", DataDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: testLogger(t), Throttle: testlog.NoCPUThrottle,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return n, n.ClientURL()
}

// nodeClient returns an in-process client of n, closed at cleanup.
func nodeClient(t testing.TB, n *mqnode.Node) *mqnode.Client {
	t.Helper()
	c, err := n.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// cli runs one mqmesh command line with stdin and returns its stdout,
// stderr and error.
func cli(t testing.TB, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRootCommand()
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errb)
	err = root.ExecuteContext(ctxT(t))
	return out.String(), errb.String(), err
}

// mustCLI runs a command line that must succeed and returns its stdout.
func mustCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, stderr, err := cli(t, "", args...)
	if err != nil {
		t.Fatalf("mqmesh %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// mustJSON runs a command line that must succeed and decodes its stdout
// strictly into a T.
func mustJSON[T any](t testing.TB, args ...string) T {
	t.Helper()
	out := mustCLI(t, args...)
	var v T
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("mqmesh %s: decode %q: %v", strings.Join(args, " "), out, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("mqmesh %s: more than one JSON value in %q", strings.Join(args, " "), out)
	}
	return v
}

// wantErr checks that err is set and its message contains every want.
func wantErr(t testing.TB, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not contain %q", err, w)
		}
	}
}

// writeFile writes a file in a temp dir and returns its path.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
