package sim

import "testing"

// loseHostScenario leaves a backlog on a-h1 and then loses the host with
// its disk.
const loseHostScenario = `
name: lose-host
seed: 5
topology:
  idcs:
    - {name: a, hosts: 3, slots: 2}
load:
  rate: 20
  duration: 5s
  bursts:
    - {at: 500ms, host: a-h1, count: 2000}
handler: {median: 20ms, p99: 40ms}
filter: everything
timeline:
  - {at: 0s, phase: normal, action: normal}
  - {at: 2s, phase: a-h1 lost, action: lose-host, host: a-h1}
drain: 20s
modes: [mesh]
`

// TestLoseHostUnreplicated: without replication, the tasks waiting on the
// lost disk are lost, and counted as such (not stranded: the host does not
// come back), while every other task completes.
func TestLoseHostUnreplicated(t *testing.T) {
	rep, _ := play(t, loseHostScenario, 5)
	m := rep.Modes[0]
	if m.OnLostDisk == 0 || m.Lost == 0 || m.LostOnLostDisk != m.Lost || m.Stranded != 0 {
		t.Errorf("on the lost disk %d, lost %d (%d of them on it), stranded %d", m.OnLostDisk, m.Lost, m.LostOnLostDisk, m.Stranded)
	}
	if m.Completed+m.Lost != m.Enqueued || !m.Drained {
		t.Errorf("%d enqueued, %d completed, %d lost, drained %v", m.Enqueued, m.Completed, m.Lost, m.Drained)
	}
}
