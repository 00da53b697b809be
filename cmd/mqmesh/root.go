package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/internal/bench"
	"github.com/mqmesh/mqmesh/mqnode"
)

// newRootCommand builds the whole command tree. It holds no global state, so
// tests build a fresh tree for every run.
func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "mqmesh",
		Short: "A decentralized, cross-machine task queue",
		Long: `mqmesh runs MQ nodes that keep tasks on their own disk and serve them over
NATS, alone or as members of a mesh spanning hosts and IDCs, and talks to
them as a client.

Results are printed on stdout (add --json for a stable JSON object);
diagnostics and logs go to stderr.`,
		Version: mqnode.Version,
		// main prints the error once; usage is only shown on request.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())
	})
	root.AddCommand(
		newNodeCommand(),
		newEnqueueCommand(),
		newStatsCommand(),
		newDLQCommand(),
		newTraceCommand(),
		newTopCommand(),
		newReplayCommand(), // replay.go
		newTopicCommand(),  // topic.go
		newWorkerCommand(),
		newBacklogCommand(),
		newMeshCommand(),
		newSimCommand(),
		newSecretsCommand(),
		newQueueCommand(),
		bench.NewCommand(),
	)
	return root
}
