package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func newQueueCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "Manage the queues of a node",
	}
	cmd.AddCommand(newQueueDeleteCommand())
	return cmd
}

// queueDeleteJSON is the --json output of `mqmesh queue delete`.
type queueDeleteJSON struct {
	Queue   string `json:"queue"`
	Deleted bool   `json:"deleted"`
}

func newQueueDeleteCommand() *cobra.Command {
	o := &struct {
		clientOptions
		Queue string
	}{}
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Delete an empty queue of a node (admin)",
		Long: `Delete an empty queue: one with no ready, delayed, leased or dead task, not
declared in the node's config. Its metadata goes too, so it is not loaded at
the next start. A node also removes auto-created queues that stay empty and
unused for queue_idle_evict (1h) by itself.`,
		Example: `  mqmesh queue delete --queue scratch
  mqmesh queue delete --queue scratch --secrets ./secrets --server nats://10.0.0.2:4222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.clientOptions.Validate(); err != nil {
				return err
			}
			if err := validateQueue(o.Queue); err != nil {
				return err
			}
			return runQueueDelete(cmd.Context(), &o.clientOptions, o.Queue, cmd.OutOrStdout())
		},
	}
	o.bind(cmd.Flags())
	cmd.Flags().StringVarP(&o.Queue, "queue", "q", "", "queue (required)")
	return cmd
}

func runQueueDelete(ctx context.Context, o *clientOptions, queue string, stdout io.Writer) error {
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	rctx, cancel := o.request(ctx)
	defer cancel()
	if err := c.DeleteQueue(rctx, queue); err != nil {
		return fmt.Errorf("queue delete: %w", err)
	}
	if o.JSON {
		return writeJSON(stdout, queueDeleteJSON{Queue: queue, Deleted: true})
	}
	_, err = fmt.Fprintf(stdout, "deleted queue %s\n", queue)
	return err
}
