package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/internal/subject"
	"github.com/mqmesh/mqmesh/mqnode"
	"github.com/mqmesh/mqmesh/mqnode/wirepb"
)

// topicJSON is one topic in the stable --json output of `mqmesh topic`.
type topicJSON struct {
	Name          string             `json:"name"`
	Subscriptions []subscriptionJSON `json:"subscriptions"`
	// Source is "config" (the node's config file) or "mesh" (made with
	// `topic create`, propagated to every node).
	Source    string    `json:"source"`
	UpdatedAt time.Time `json:"updated_at"` // zero for config topics
	Origin    string    `json:"origin"`     // idc.node of the last change ("" for config)
}

type subscriptionJSON struct {
	Queue  string `json:"queue"`
	Header string `json:"header"` // "" = every task
	Value  string `json:"value"`
}

// topicListJSON is the --json output of `topic list`.
type topicListJSON struct {
	Topics []topicJSON `json:"topics"`
}

func newTopicCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topic",
		Short: "Manage topics: enqueues to topic:T fan out into subscribed queues",
		Long: `A topic fans each task enqueued to "topic:T" out into every subscribed queue
whose filter matches, all in one transaction on the receiving node. A
subscription is a queue, optionally with a tag filter HEADER=VALUE.

Topics made here are stored on the node and propagated to every node of the
mesh (last change wins); topics in a node's config file (topics:) exist on
that node only and cannot be changed here.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newTopicCreateCommand(), newTopicListCommand(), newTopicDeleteCommand())
	return cmd
}

type topicCreateOptions struct {
	clientOptions
	Subs []string
	subs []mqnode.Subscription
}

func newTopicCreateCommand() *cobra.Command {
	o := &topicCreateOptions{}
	cmd := &cobra.Command{
		Use:   "create TOPIC --sub QUEUE[:HEADER=VALUE]...",
		Short: "Create or replace a topic and its subscriptions (admin)",
		Example: `  mqmesh topic create orders --sub billing --sub audit --sub vip:tier=gold
  mqmesh enqueue --queue topic:orders --header tier=gold --payload '{"id": 7}'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(args[0]); err != nil {
				return err
			}
			return o.run(cmd.Context(), args[0], cmd.OutOrStdout())
		},
	}
	o.bind(cmd.Flags())
	cmd.Flags().StringArrayVar(&o.Subs, "sub", nil, "subscription QUEUE or QUEUE:HEADER=VALUE (repeatable, at least one)")
	return cmd
}

// parseSub reads QUEUE or QUEUE:HEADER=VALUE.
func parseSub(s string) (mqnode.Subscription, error) {
	q, filter, hasFilter := strings.Cut(s, ":")
	sub := mqnode.Subscription{Queue: q}
	if err := subject.Validate("--sub queue", q); err != nil {
		return sub, err
	}
	if hasFilter {
		h, v, ok := strings.Cut(filter, "=")
		if !ok || h == "" {
			return sub, fmt.Errorf("--sub %q: want QUEUE or QUEUE:HEADER=VALUE", s)
		}
		sub.Header, sub.Value = h, v
	}
	return sub, nil
}

// Validate checks the topic name and parses the subscriptions.
func (o *topicCreateOptions) Validate(name string) error {
	if err := o.clientOptions.Validate(); err != nil {
		return err
	}
	if err := subject.Validate("topic", name); err != nil {
		return err
	}
	if len(o.Subs) == 0 {
		return fmt.Errorf("give at least one --sub QUEUE[:HEADER=VALUE]")
	}
	o.subs = nil
	for _, s := range o.Subs {
		sub, err := parseSub(s)
		if err != nil {
			return err
		}
		o.subs = append(o.subs, sub)
	}
	return nil
}

func (o *topicCreateOptions) run(ctx context.Context, name string, stdout io.Writer) error {
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	rctx, cancel := o.request(ctx)
	defer cancel()
	tp, err := c.TopicCreate(rctx, name, o.subs...)
	if err != nil {
		return fmt.Errorf("topic create: %w", err)
	}
	if o.JSON {
		return writeJSON(stdout, newTopicJSON(tp))
	}
	_, err = fmt.Fprintf(stdout, "topic %s: %s (propagating to the mesh)\n", name, formatSubs(tp.GetSubscriptions()))
	return err
}

func newTopicListCommand() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the topics a node knows",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			c, err := o.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := o.request(cmd.Context())
			defer cancel()
			tps, err := c.Topics(rctx)
			if err != nil {
				return fmt.Errorf("topic list: %w", err)
			}
			out := topicListJSON{Topics: []topicJSON{}}
			for _, tp := range tps {
				out.Topics = append(out.Topics, newTopicJSON(tp))
			}
			if o.JSON {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			tw := newTable(cmd.OutOrStdout())
			fmt.Fprintln(tw, "TOPIC\tSOURCE\tUPDATED\tSUBSCRIPTIONS")
			for i, t := range out.Topics {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Source, formatTime(t.UpdatedAt), formatSubs(tps[i].GetSubscriptions()))
			}
			return tw.Flush()
		},
	}
	o.bind(cmd.Flags())
	return cmd
}

func newTopicDeleteCommand() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "delete TOPIC",
		Short: "Delete a topic on every node of the mesh (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			if err := subject.Validate("topic", args[0]); err != nil {
				return err
			}
			c, err := o.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := o.request(cmd.Context())
			defer cancel()
			if err := c.TopicDelete(rctx, args[0]); err != nil {
				return fmt.Errorf("topic delete: %w", err)
			}
			if o.JSON {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"deleted": args[0]})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "topic %s deleted (propagating to the mesh)\n", args[0])
			return err
		},
	}
	o.bind(cmd.Flags())
	return cmd
}

func newTopicJSON(tp *wirepb.Topic) topicJSON {
	t := topicJSON{Name: tp.GetName(), Source: "mesh", UpdatedAt: unixMsTime(tp.GetVersionUnixMs()), Origin: tp.GetOrigin(),
		Subscriptions: []subscriptionJSON{}}
	if tp.GetStatic() {
		t.Source = "config"
	}
	for _, s := range tp.GetSubscriptions() {
		t.Subscriptions = append(t.Subscriptions, subscriptionJSON{Queue: s.GetQueue(), Header: s.GetHeader(), Value: s.GetValue()})
	}
	return t
}

func formatSubs(subs []*wirepb.TopicSubscription) string {
	parts := make([]string, len(subs))
	for i, s := range subs {
		parts[i] = s.GetQueue()
		if s.GetHeader() != "" {
			parts[i] += ":" + s.GetHeader() + "=" + s.GetValue()
		}
	}
	return strings.Join(parts, ", ")
}

// topicsValue is the node's --topic flag: NAME=QUEUE[:HEADER=VALUE],...
type topicsValue struct {
	m *map[string][]mqnode.Subscription
}

func (v topicsValue) Type() string { return "name=queue[:header=value],..." }
func (v topicsValue) String() string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(*v.m)) {
		subs := make([]*wirepb.TopicSubscription, 0, len((*v.m)[name]))
		for _, s := range (*v.m)[name] {
			subs = append(subs, &wirepb.TopicSubscription{Queue: s.Queue, Header: s.Header, Value: s.Value})
		}
		parts = append(parts, name+"="+strings.ReplaceAll(formatSubs(subs), ", ", ","))
	}
	return strings.Join(parts, " ")
}
func (v topicsValue) Set(s string) error {
	for _, def := range strings.Fields(s) {
		name, list, ok := strings.Cut(def, "=")
		if !ok || list == "" {
			return fmt.Errorf("%q: want NAME=QUEUE[:HEADER=VALUE],...", def)
		}
		if err := subject.Validate("topic", name); err != nil {
			return err
		}
		var subs []mqnode.Subscription
		for _, part := range strings.Split(list, ",") {
			sub, err := parseSub(part)
			if err != nil {
				return err
			}
			subs = append(subs, sub)
		}
		if *v.m == nil {
			*v.m = map[string][]mqnode.Subscription{}
		}
		(*v.m)[name] = subs
	}
	return nil
}
