package mqnode

import (
	"hash/fnv"
	"time"
)

// setPeers records the mesh's nodes (Node.SetPeers): who may be the buddy,
// and since when each is down (takeover).
func (r *replicator) setPeers(peers []Peer) {
	now := time.Now()
	r.mu.Lock()
	seen := map[string]bool{}
	r.peers = make(map[string]Peer, len(peers))
	for _, p := range peers {
		if p.Name == "" || p.ID() == r.self.ID() {
			continue
		}
		r.peers[p.ID()] = p
		seen[p.ID()] = true
		if p.Alive {
			delete(r.downSince, p.ID())
		} else if _, ok := r.downSince[p.ID()]; !ok {
			r.downSince[p.ID()] = now
		}
	}
	r.peersSeen = true
	r.mu.Unlock()
	r.poke(r.peersCh)
}

// downFor says how long gossip has reported peer id down (failed, left or
// absent since the first peer list); 0 while it is alive.
func (r *replicator) downForLocked(id string, now time.Time) time.Duration {
	if !r.peersSeen {
		return 0
	}
	if p, ok := r.peers[id]; ok && p.Alive {
		return 0
	}
	since, ok := r.downSince[id]
	if !ok {
		since = now
		r.downSince[id] = now
	}
	return now.Sub(since)
}

// chooseLocked picks the buddy: the current one while it is alive
// (sticky: a new member does not move the copy), else the alive node of
// the buddy IDC, on another host, with the highest rendezvous hash of
// (this node, candidate) — deterministic, and spread evenly so nodes do not
// all pick the same buddy.
func (r *replicator) chooseLocked() (Peer, bool) {
	if p, ok := r.peers[r.buddy.ID()]; ok && p.Alive && r.buddy.Name != "" {
		return p, true
	}
	var best Peer
	var bestScore uint64
	found := false
	for _, p := range r.peers {
		if !p.Alive || p.IDC != r.cfg.IDC || (p.Host != "" && p.Host == r.self.Host) {
			continue
		}
		s := rendezvous(r.self.ID(), p.ID())
		if !found || s > bestScore || (s == bestScore && p.ID() < best.ID()) {
			best, bestScore, found = p, s, true
		}
	}
	return best, found
}

func rendezvous(self, peer string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(self))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(peer))
	// fnv's low bits mix poorly for similar inputs: finish with a
	// splitmix64 round.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
