package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mqmesh/mqmesh/internal/secrets"
)

func newSecretsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Create and rotate a mesh's secrets (CA, certificates, role credentials, gossip key)",
	}
	cmd.AddCommand(newSecretsInitCommand(), newGossipKeyCommand())
	return cmd
}

func newGossipKeyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gossip-key",
		Short: "Rotate the gossip key without downtime: add, then use, then remove",
		Long: `Rotate the gossip key in three steps. After each step copy DIR/gossip.key to
every host (nodes and workers reload it while they run) before the next:

  mqmesh secrets gossip-key add DIR      install a new key (members still send with the old)
  mqmesh secrets gossip-key use DIR      make the new key the primary (the old still decrypts)
  mqmesh secrets gossip-key remove DIR   drop the old key

Each prints the keyring's fingerprints (first 8 bytes of each key's SHA-256),
primary first, never the keys.`,
	}
	for _, step := range []struct {
		name, short string
		run         func(string) ([]string, error)
	}{
		{"add", "Install a new gossip key (step 1)", secrets.AddGossipKey},
		{"use", "Make the newest gossip key the primary (step 2)", secrets.UseGossipKey},
		{"remove", "Drop every gossip key but the primary (step 3)", secrets.RemoveGossipKeys},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   step.name + " DIR",
			Short: step.short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				fps, err := step.run(args[0])
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "gossip keyring (primary first): %s\n", strings.Join(fps, " "))
				return err
			},
		})
	}
	return cmd
}

func newSecretsInitCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "init DIR",
		Short: "Write a new secrets directory for a mesh",
		Long: `Write everything a mesh needs to run secured into DIR (mode 0700, files 0600):

  ca.crt ca.key        the mesh CA (keep ca.key offline: it only issues certificates)
  node.crt node.key    the node certificate, valid for the name "mqmesh-node" on any IP
  node.nk worker.nk producer.nk admin.nk
                       the NATS credentials (nkey seeds) of each role
  roles.json           the public keys of each role, which nodes authorize
  cluster.secret       the password of routes and gateways (with mutual TLS)
  gossip.key           the gossip keyring (AES-256), primary first
  admin.token          the admin's bearer token for HTTP endpoints

It never overwrites an existing set; --force replaces every file (a rotation
of everything at once — see the README's Security section for rotating one
kind at a time without downtime).

Hand each host only what its roles need: a node host ca.crt node.crt node.key
node.nk roles.json cluster.secret gossip.key; a worker host ca.crt worker.nk
gossip.key; a producer ca.crt producer.nk; an operator ca.crt admin.nk.
Then give every command --secrets DIR (or set $` + SecretsEnv + `).`,
		Example: `  mqmesh secrets init ./secrets
  mqmesh node --secrets ./secrets --listen 0.0.0.0:4222
  mqmesh enqueue --secrets ./secrets --queue jobs --payload hello`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := secrets.Init(dir, force); err != nil {
				return err
			}
			if _, err := secrets.Load(dir); err != nil {
				return fmt.Errorf("secrets written but do not load: %w", err)
			}
			verb := "wrote"
			if force {
				verb = "replaced"
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s the secrets of a new mesh in %s (keep ca.key offline; see 'mqmesh secrets init --help' for which files go to which host)\n", verb, dir)
			return err
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing set (rotates every secret at once)")
	return cmd
}
