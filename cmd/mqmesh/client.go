package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode"
)

// defaultServer is where `mqmesh node` listens by default.
const defaultServer = "nats://" + mqnode.DefaultListen

// clientOptions are the flags every client command shares.
type clientOptions struct {
	// Server is the NATS URL of the node to talk to.
	Server string
	// Timeout bounds connecting and each request.
	Timeout time.Duration
	// JSON selects the stable JSON output.
	JSON bool
	// sec are --secrets and --role; sec.def is the command's role.
	sec securityFlags
}

func (o *clientOptions) bind(fs *pflag.FlagSet) {
	fs.StringVarP(&o.Server, "server", "s", defaultServer, "NATS URL of the node")
	fs.DurationVar(&o.Timeout, "timeout", mqnode.DefaultRequestTimeout, "timeout of connecting and of each request")
	fs.BoolVar(&o.JSON, "json", false, "print a stable JSON object instead of text")
	o.sec.bind(fs)
}

// Validate checks the shared flags.
func (o *clientOptions) Validate() error {
	if o.Server == "" {
		return errors.New("--server: empty URL")
	}
	if o.Timeout <= 0 {
		return fmt.Errorf("--timeout %s: must be positive", o.Timeout)
	}
	return o.sec.validate()
}

// dial connects to the node; the caller closes the client.
func (o *clientOptions) dial(ctx context.Context) (*mqnode.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	opts, err := o.sec.natsOptions()
	if err != nil {
		return nil, err
	}
	return mqnode.Dial(ctx, o.Server, append(opts, nats.Timeout(o.Timeout))...)
}

// request returns a context for one request.
func (o *clientOptions) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, o.Timeout)
}

// validateTarget checks a --queue flag that may also be topic:T.
func validateTarget(target string) error {
	if target == "" {
		return errors.New("--queue is required")
	}
	return mqnode.ValidateTarget("--queue", target)
}

// validateQueue checks the value of a --queue flag.
func validateQueue(queue string) error {
	if queue == "" {
		return errors.New("--queue is required")
	}
	return subject.Validate("--queue", queue)
}
