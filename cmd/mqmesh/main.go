// Command mqmesh is the single binary of the mqmesh task queue: it runs a
// node (`mqmesh node`, standalone or as a mesh member), talks to one as a
// client (`enqueue`, `stats`, `dlq`, `mesh members`), and runs the
// benchmarks (`bench`).
//
// Results go to stdout (text, or a stable JSON object with --json);
// diagnostics and logs go to stderr; any error exits non-zero.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "mqmesh:", err)
		os.Exit(1)
	}
}
