// Package bench runs mqmesh's benchmarks against named peers in one run.
package bench

import (
	"errors"

	"github.com/spf13/cobra"
)

// NewCommand returns the `bench` command tree.
func NewCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Run benchmarks against a peer in the same run"}
	cmd.AddCommand(&cobra.Command{Use: "node", RunE: func(*cobra.Command, []string) error {
		return errors.New("bench node: not built yet")
	}})
	return cmd
}
