// Package secrets creates, loads and applies the secrets of an mqmesh mesh:
// one directory per mesh, written by `mqmesh secrets init DIR`.
//
// # The directory
//
// Every file is mode 0600 and the directory 0700:
//
//	ca.crt, ca.key        the mesh CA (ECDSA P-256). ca.key only issues certificates:
//	                      keep it offline, never hand it to a host.
//	node.crt, node.key    the node certificate (server and client auth) signed by the CA,
//	                      SAN DNS "mqmesh-node" (every peer verifies that name, so one
//	                      certificate serves any IP), plus localhost, 127.0.0.1, ::1.
//	node.nk, worker.nk,   NATS user nkey seeds, one per role.
//	producer.nk, admin.nk
//	roles.json            the public nkeys of each role: what a node's server authorizes.
//	cluster.secret        password of route and gateway connections (on top of mutual TLS).
//	gossip.key            memberlist keyring: base64 AES-256 keys, one a line, first = primary.
//	admin.token           the admin's HTTP bearer token (metrics, dashboard).
//
// A host needs only the files of its roles: every host ca.crt; a node host
// node.crt, node.key, node.nk, roles.json, cluster.secret, gossip.key; a
// worker host worker.nk and gossip.key; a producer producer.nk; an operator
// admin.nk. Load accepts a partial directory and names the missing file
// when something needs it.
//
// # Roles
//
// Clients authenticate as NATS nkey users (a challenge signed with the
// seed: the seed never crosses the wire, and roles.json holds only public
// keys, so a node's config leaks no credential). JWT accounts were not
// chosen: mqmesh has one account and four fixed roles, and operator/account
// JWTs would add a resolver and three more key kinds for nothing it needs.
// Each role's subject permissions are in Permissions; only nodes may answer
// requests on mq.> or publish backlog (bl.>) and usage (thr.>), and each
// role reads replies only under its own inbox prefix (InboxPrefix).
//
// # Links
//
// Client connections: TLS (server authenticated by the CA, name
// "mqmesh-node") plus the nkey. Routes and gateways: mutual TLS with the
// node certificate plus cluster.secret. Gossip: memberlist's AES-GCM
// keyring from gossip.key, required on every packet in and out.
package secrets
