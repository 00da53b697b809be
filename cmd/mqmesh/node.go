package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/mqmesh/mqmesh/mqnode"
)

// defaultShutdownTimeout bounds the graceful stop after a signal.
const defaultShutdownTimeout = 30 * time.Second

// nodeOptions are the flags of `mqmesh node`.
type nodeOptions struct {
	ConfigFile      string
	JSON            bool
	PrintConfig     bool
	LogLevel        string
	LogFormat       string
	ShutdownTimeout time.Duration

	// flags is bound to the config flags; only those set are used.
	flags mqnode.Config
	// cfg is the config file with the set flags applied (see complete).
	cfg mqnode.Config
}

// nodeReadyJSON is the --json line `mqmesh node` prints once it serves.
type nodeReadyJSON struct {
	Name       string `json:"name"`
	IDC        string `json:"idc"`
	URL        string `json:"url"` // "" when listen is "none"
	Data       string `json:"data"`
	Durability string `json:"durability"`
	Version    string `json:"version"`
}

func newNodeCommand() *cobra.Command {
	o := &nodeOptions{flags: mqnode.Config{}.WithDefaults()}
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run an MQ node until SIGINT or SIGTERM",
		Long: `Run an MQ node: a durable task store and an embedded NATS server.

The configuration comes from --config (YAML, see configs/node.yaml), then
from the flags that are set; anything left out takes its default, so
'mqmesh node' alone serves a standalone node from ./data on 127.0.0.1:4222.
Once the node serves, its client URL is printed on stdout; logs go to
stderr. SIGINT or SIGTERM stops it gracefully (a second one kills it).`,
		Example: `  mqmesh node
  mqmesh node --config configs/node.yaml --listen 0.0.0.0:4222
  mqmesh node --config node.yaml --print-config`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.complete(cmd.Flags()); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			if o.PrintConfig {
				return o.printConfig(cmd.OutOrStdout())
			}
			return o.run(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringVarP(&o.ConfigFile, "config", "c", "", "YAML config file; flags that are set override it")
	fs.BoolVar(&o.PrintConfig, "print-config", false, "print the effective config as YAML and exit")
	fs.BoolVar(&o.JSON, "json", false, "print the ready line as a JSON object")
	fs.StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.LogFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", defaultShutdownTimeout, "how long a graceful stop may take")
	bindConfigFlags(fs, &o.flags)
	return cmd
}

// complete builds the config: the file (if any), then the set flags.
func (o *nodeOptions) complete(fs *pflag.FlagSet) error {
	o.cfg = mqnode.Config{}
	if o.ConfigFile != "" {
		cfg, err := loadConfig(o.ConfigFile)
		if err != nil {
			return err
		}
		o.cfg = cfg
	}
	return applyConfigFlags(fs, &o.cfg)
}

// Validate checks the options and the node config.
func (o *nodeOptions) Validate() error {
	if _, err := parseLevel(o.LogLevel); err != nil {
		return err
	}
	if o.LogFormat != "text" && o.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", o.LogFormat)
	}
	if o.ShutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout %s: must be positive", o.ShutdownTimeout)
	}
	if err := o.cfg.WithDefaults().Validate(); err != nil {
		return fmt.Errorf("node config: %w", err)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func (o *nodeOptions) logger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(o.LogLevel) // checked by Validate
	opts := &slog.HandlerOptions{Level: level}
	if o.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func (o *nodeOptions) printConfig(w io.Writer) error {
	b, err := yaml.Marshal(o.cfg.WithDefaults())
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	_, err = w.Write(b)
	return err
}

// run starts the node, reports it ready, and stops it gracefully when ctx
// ends or a signal arrives.
func (o *nodeOptions) run(ctx context.Context, stdout, stderr io.Writer) (err error) {
	ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	cfg := o.cfg
	cfg.Logger = o.logger(stderr)
	n, err := mqnode.New(cfg)
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	defer func() {
		stopSignals() // from here a second signal kills the process
		cfg.Logger.Info("stopping node", "timeout", o.ShutdownTimeout)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
		defer cancel()
		if serr := n.Stop(sctx); serr != nil {
			err = errors.Join(err, fmt.Errorf("stop node: %w", serr))
		}
	}()
	if err := o.printReady(stdout, n); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func (o *nodeOptions) printReady(w io.Writer, n *mqnode.Node) error {
	c := n.Config()
	if o.JSON {
		// One line, so a supervisor can read it like the text form.
		return json.NewEncoder(w).Encode(nodeReadyJSON{
			Name: c.Name, IDC: c.IDC, URL: n.ClientURL(), Data: c.DataDir,
			Durability: string(c.Durability), Version: mqnode.Version,
		})
	}
	where := "at " + n.ClientURL()
	if c.Listen == mqnode.ListenNone {
		where = "without a listener (in-process clients only)"
	}
	_, err := fmt.Fprintf(w, "mqmesh node %s (idc %s) ready %s\n", c.Name, c.IDC, where)
	return err
}
