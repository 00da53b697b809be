package bench

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Peers of the replicated pairing (repl.go).
const (
	// peerJetStreamR3 is three JetStream servers clustered over routes on
	// loopback, in one child process, serving a stream of Replicas: 3 at
	// the default sync (a write is acknowledged once a quorum, 2 of 3, has
	// it in its file store; no fsync per message).
	peerJetStreamR3 = "jetstream-r3"
	// peerMQNodeR1 is two mqnodes in one child process, the second the
	// buddy of the first (replicas: 1, replication: sync): an enqueue is
	// acknowledged once the buddy has it under its durability.
	peerMQNodeR1 = "mqnode-r1"
)

// jsClusterSize is the servers of peerJetStreamR3.
const jsClusterSize = 3

// family is the peer a replicated peer is a variant of: its client, drive
// grid and baseline are that peer's.
func family(peerName string) string {
	switch peerName {
	case peerJetStreamR3:
		return peerJetStream
	case peerMQNodeR1:
		return peerMQNode
	}
	return peerName
}

// replicas is the stream replicas a JetStream peer's prepare asks for.
func replicas(peerName string) int {
	if peerName == peerJetStreamR3 {
		return jsClusterSize
	}
	return 1
}

// startJetStreamCluster starts jsClusterSize JetStream servers with
// routes to each other on loopback, each with its store under dir, waits
// until they have elected a meta leader, and returns their client URLs
// (comma separated, as nats.Connect takes them) and how to stop them.
func startJetStreamCluster(o serveOptions) (string, func() error, error) {
	ports, err := freePorts(jsClusterSize)
	if err != nil {
		return "", nil, err
	}
	routes := make([]string, len(ports))
	for i, p := range ports {
		routes[i] = "nats-route://127.0.0.1:" + strconv.Itoa(p)
	}
	var servers []*server.Server
	stop := func() error {
		for _, s := range servers {
			s.Shutdown()
		}
		for _, s := range servers {
			s.WaitForShutdown()
		}
		return nil
	}
	for i, p := range ports {
		opts := jetStreamServerOptions(filepath.Join(o.dir, "s"+strconv.Itoa(i+1)), o.durability == durFsync)
		opts.ServerName = fmt.Sprintf("bench-js-%d", i+1)
		opts.Cluster = server.ClusterOpts{Name: "bench-r3", Host: "127.0.0.1", Port: p}
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		s, err := server.NewServer(opts)
		if err != nil {
			return "", nil, errors.Join(fmt.Errorf("jetstream-r3 server %d: %w", i+1, err), stop())
		}
		servers = append(servers, s)
		go s.Start()
	}
	urls := make([]string, len(servers))
	deadline := time.Now().Add(60 * time.Second)
	for i, s := range servers {
		if !s.ReadyForConnections(time.Until(deadline)) {
			return "", nil, errors.Join(fmt.Errorf("jetstream-r3: server %d not ready within 60s", i+1), stop())
		}
		urls[i] = s.ClientURL()
	}
	// The cluster takes JetStream requests once it has a meta leader and
	// every server is current with it.
	for {
		leader, current := 0, 0
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				leader++
			}
			if s.JetStreamIsCurrent() {
				current++
			}
		}
		if leader == 1 && current == len(servers) {
			break
		}
		if time.Now().After(deadline) {
			return "", nil, errors.Join(errors.New("jetstream-r3: no meta leader within 60s"), stop())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return strings.Join(urls, ","), stop, nil
}

// freePorts returns n TCP ports free on 127.0.0.1 now (the cluster
// listeners must know each other's ports before they start).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}
