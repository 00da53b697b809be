package mqnode

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// Key layout in Badger. Every queue-scoped key is prefix byte, queue-name
// length (1 byte), queue name, then the suffix; the length byte keeps queue
// "a" from being a prefix of queue "ab".
//
//	t|len|queue|readyAt ms (8, big endian)|seq (8)   task record (frame)
//	d|len|queue|seq (8)                              dead-letter record (frame)
//	u|len|queue|dedup key                            dedup entry: task id (Badger TTL)
//	m|queue                                          queue metadata
//	S|len|queue|settled ms (8)|seq (8)               settled task kept for replay (Badger TTL; settled.go)
//	R|len|queue|replay id|0|root task id             replay ledger: new task id (Badger TTL; replay.go)
//	P|topic                                          topic and its subscriptions (topic.go)
//	!seq                                             Badger sequence lease
//
// Task keys sort by the time the task becomes ready, then by a node-wide
// sequence, so a cursor scan delivers in ready order and delayed tasks sit
// behind the ready ones until their time comes.
const (
	pfxTask  = 't'
	pfxDead  = 'd'
	pfxDedup = 'u'
	pfxMeta  = 'm'
)

var seqKey = []byte("!seq")

func queuePrefix(pfx byte, queue string) []byte {
	b := make([]byte, 0, 2+len(queue)+16)
	b = append(b, pfx, byte(len(queue)))
	return append(b, queue...)
}

func taskKey(queue string, readyAt int64, seq uint64) []byte {
	b := queuePrefix(pfxTask, queue)
	b = binary.BigEndian.AppendUint64(b, uint64(readyAt))
	return binary.BigEndian.AppendUint64(b, seq)
}

// taskKeyFloor is the smallest task key of queue with readyAt >= t.
func taskKeyFloor(queue string, t int64) []byte {
	b := queuePrefix(pfxTask, queue)
	return binary.BigEndian.AppendUint64(b, uint64(t))
}

// parseTaskKey returns the readyAt and seq of a task key of queue.
func parseTaskKey(queue string, k []byte) (readyAt int64, seq uint64, err error) {
	p := 2 + len(queue)
	if len(k) != p+16 || k[0] != pfxTask || int(k[1]) != len(queue) || string(k[2:p]) != queue {
		return 0, 0, fmt.Errorf("%w: malformed task key %x", ErrInternal, k)
	}
	return int64(binary.BigEndian.Uint64(k[p:])), binary.BigEndian.Uint64(k[p+8:]), nil
}

func deadKey(queue string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(queuePrefix(pfxDead, queue), seq)
}

func dedupKey(queue, key string) []byte {
	return append(queuePrefix(pfxDedup, queue), key...)
}

func metaKey(queue string) []byte {
	return append([]byte{pfxMeta}, queue...)
}

// deadID renders the sequence of a dead-letter key as its public id.
func deadID(seq uint64) string { return fmt.Sprintf("%016x", seq) }

func parseDeadID(s string) (uint64, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("%w: dead id %q is not 16 hex digits", ErrBadRequest, s)
	}
	seq, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: dead id %q is not 16 hex digits", ErrBadRequest, s)
	}
	return seq, nil
}
