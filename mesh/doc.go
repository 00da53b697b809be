// Package mesh turns single MQ nodes into one mesh across hosts and IDCs,
// with no central coordinator and no hand-written route lists.
//
// # Membership
//
// Every node and every worker pool is a member of a gossip mesh
// (hashicorp/memberlist) with metadata: role (node / worker), IDC, host,
// name, NATS client / cluster / gateway addresses, version. Join by naming
// any one seed. Profiles follow memberlist's: ProfileLAN inside an IDC,
// ProfileWAN across slow links, ProfileLocal for one machine. Gossip is
// encrypted with Config.SecretKey or $MQMESH_GOSSIP_KEY (base64 of 16, 24
// or 32 bytes).
//
// Membership events (join, update, leave, fail) reach subscribers
// (Mesh.Subscribe) without ever blocking the gossip loop: a full
// subscriber's events are dropped and counted. A graceful leave
// (Mesh.Stop: the intent is gossiped and sent directly to every member
// first) is reported as "left"; a crash (Mesh.Kill, kill -9, a cut cable)
// is detected and reported as "failed". Mesh and NodeAgent keep the
// lifecycle contract of package internal/lifecycle (Start once, Stop
// graceful, Kill as a crash).
//
// # Ports and defaults
//
// Defaults live in Config.WithDefaults and NodeAgentConfig.WithDefaults,
// and the CLI's flags and config files take them from there: gossip on
// DefaultBindPort (7946), a node's NATS routes on DefaultClusterPort (6222)
// and gateways on DefaultGatewayPort (7222), on the host of the node's
// client listener. A zero port is its default, as every zero field is.
// Tests, the simulator and several members on one host ask for a free port
// instead: Config.BindPort = RandomPort (-1), and port 0 in a listen
// address (ClusterListen "127.0.0.1:0"), as NATS does. A worker pool's
// gossip port defaults to RandomPort (worker.Config): it shares its host
// with a node.
//
// # NATS topology from membership
//
// NodeAgent runs an mqnode.Node as a member. It joins gossip first, then
// starts the node's embedded NATS server with routes to the nodes of its
// IDC (one NATS cluster per IDC, named after it) and gateways to the other
// IDCs (the clusters joined into a supercluster), as gossip reports them;
// then it gossips its own NATS addresses. Routes follow membership by hot
// reload; gateways need only one known URL per remote IDC (NATS gossips
// the rest, and a remote that connects is learned implicitly). Gateways
// forward only where there is interest, so traffic for which nobody in
// another IDC subscribes stays in its IDC. The system account is off: its
// event traffic would otherwise cross every gateway.
//
// A node learns from gossip that a worker died and returns that worker's
// leased tasks to ready at once, without waiting for the lease to expire;
// pools and views drop a dead node (FeedView).
//
// The node also answers mq.<idc>.<node>.members with the membership as it
// sees it (FetchMembers; `mqmesh mesh members`).
package mesh
