package mesh

import (
	"sync"

	"github.com/mqmesh/mqmesh/backlog"
)

// FeedView removes a node's entries from a backlog view as soon as gossip
// says the node left or failed, instead of waiting for them to go stale.
// It returns a stop function (safe twice).
func (m *Mesh) FeedView(v *backlog.View) (stop func()) {
	sub := m.Subscribe(256)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case ev := <-sub.C:
				if ev.Member.Meta.Role == RoleNode && (ev.Type == EventFail || ev.Type == EventLeave) {
					v.ForgetNode(ev.Member.Meta.IDC, ev.Member.Meta.Name)
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			sub.Close()
			close(done)
			wg.Wait()
		})
	}
}
