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
    - {at: 500ms, host: a-h1, count: 800}
handler: {median: 20ms, p99: 40ms}
filter: everything
timeline:
  - {at: 0s, phase: normal, action: normal}
  - {at: 2s, phase: a-h1 lost, action: lose-host, host: a-h1}
drain: 40s
modes: [mesh, replicated]
`

// TestLoseHost: without replication (mesh), the tasks waiting on the lost
// disk are lost, and counted as such (not stranded: the host does not come
// back), while every other task completes; with a buddy (replicated), the
// buddy takes the lost host's tasks over and none is lost.
func TestLoseHost(t *testing.T) {
	rep, _ := play(t, loseHostScenario, 4)
	if len(rep.Modes) != 2 {
		t.Fatalf("modes: %+v", rep.Modes)
	}
	m, r := rep.Modes[0], rep.Modes[1]
	if m.OnLostDisk == 0 || m.Lost == 0 || m.LostOnLostDisk != m.Lost || m.Stranded != 0 {
		t.Errorf("mesh: on the lost disk %d, lost %d (%d of them on it), stranded %d", m.OnLostDisk, m.Lost, m.LostOnLostDisk, m.Stranded)
	}
	if m.Completed+m.Lost != m.Enqueued || !m.Drained {
		t.Errorf("mesh: %d enqueued, %d completed, %d lost, drained %v", m.Enqueued, m.Completed, m.Lost, m.Drained)
	}
	if r.OnLostDisk == 0 || r.Lost != 0 || r.Stranded != 0 || r.Completed != r.Enqueued || !r.Drained {
		t.Errorf("replicated: %d enqueued (%d on the lost disk), %d completed, %d lost, %d stranded, drained %v",
			r.Enqueued, r.OnLostDisk, r.Completed, r.Lost, r.Stranded, r.Drained)
	}
}
