package mesh

import (
	"errors"
	"fmt"
)

// CheckJoined is nil while this member is in a mesh: gossip runs and, when
// it was given seeds, it sees at least one other member alive (a member
// that lost everyone else is a mesh of one).
func (m *Mesh) CheckJoined() error {
	if m.ml == nil {
		return errors.New("gossip not started")
	}
	if len(m.cfg.Seeds) == 0 {
		return nil // founded the mesh: alone is fine
	}
	self := m.Self().memberID()
	for _, mb := range m.Alive(nil) {
		if mb.ID != self {
			return nil
		}
	}
	return fmt.Errorf("no other member alive (seeds %v)", m.cfg.Seeds)
}
