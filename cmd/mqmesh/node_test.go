package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
)

// runNode runs `mqmesh node args...` until the returned stop is called (at
// the latest at cleanup); it waits for the ready line on stdout and returns
// it. stop returns the command's error.
func runNode(t *testing.T, args ...string) (ready string, stop func() error) {
	t.Helper()
	br, stop := startNodeCommand(t, args...)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("no ready line (read: %v; command: %v)", err, stop())
	}
	// The command prints nothing more on stdout; drain it anyway so a
	// write can never block the command. The copy ends when pw is closed.
	go io.Copy(io.Discard, br)
	return line, stop
}

// startNodeCommand runs `mqmesh node args...` until stop (at the latest at
// cleanup) and returns its stdout; the caller must keep reading it.
func startNodeCommand(t *testing.T, args ...string) (stdout *bufio.Reader, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctxT(t))
	pr, pw := io.Pipe()
	root := newRootCommand()
	root.SetArgs(append([]string{"node"}, args...))
	root.SetOut(pw)
	root.SetErr(t.Output())
	done := make(chan error, 1)
	go func() {
		err := root.ExecuteContext(ctx)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	var once sync.Once
	var stopErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			stopErr = <-done
		})
		return stopErr
	}
	t.Cleanup(func() { stop() })
	return bufio.NewReader(pr), stop
}

func TestNodeCommandServes(t *testing.T) {
	line, stop := runNode(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--name", "n7", "--idc", "east", "--json", "--log-level", "debug")
	var ready nodeReadyJSON
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ready); err != nil {
		t.Fatalf("ready line %q: %v", line, err)
	}
	if ready.Name != "n7" || ready.IDC != "east" || ready.Durability != "fsync" || !strings.HasPrefix(ready.URL, "nats://127.0.0.1:") {
		t.Fatalf("ready %+v", ready)
	}
	ids := mustCLI(t, "enqueue", "--server", ready.URL, "--queue", "jobs", "--payload", "hi", "--ids")
	if n := strings.Count(ids, "\n"); n != 1 {
		t.Fatalf("enqueue printed %q, want one id", ids)
	}
	st := mustJSON[statsJSON](t, "stats", "--server", ready.URL, "--json")
	if st.Node.Name != "n7" || len(st.Queues) != 1 || st.Queues[0].Ready != 1 {
		t.Fatalf("stats %+v", st)
	}
	if err := stop(); err != nil {
		t.Fatalf("node did not stop cleanly: %v", err)
	}
}

func TestNodeCommandTextReadyLine(t *testing.T) {
	line, stop := runNode(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--name", "n1", "--log-format", "json")
	if !strings.HasPrefix(line, "mqmesh node n1 (idc local) ready at nats://127.0.0.1:") || strings.Count(line, "\n") != 1 {
		t.Fatalf("ready line %q", line)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestNodeCommandStartFails(t *testing.T) {
	// Two nodes cannot share a data directory: Badger locks it.
	dir := t.TempDir()
	_, stop := runNode(t, "--data", dir, "--listen", "none", "--name", "n1")
	out, _, err := cli(t, "", "node", "--data", dir, "--listen", "none", "--name", "n2", "--log-level", "error")
	wantErr(t, err, "lock")
	if out != "" {
		t.Fatalf("stdout %q from a node that did not start", out)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
