package mqnode

// Keys of replication in the store (beside keys.go's):
//
//	r|len|primary|key        a primary's record held as its buddy's standby copy
//	X|len|primary|key        takeover marker: the primary's key this buddy took (value: the new key)
//	Q|primary                the buddy's state of a primary (ReplHeld frame)
//	!repl                    this node's own replication state as a primary (ReplSelf frame)
//
// primary is idc.name. The standby copy never mixes with the node's own
// keys: its records start with r, which no queue key does.
const (
	pfxShadow    = 'r'
	pfxTookOver  = 'X'
	pfxHeldState = 'Q'
)

var replSelfKey = []byte("!repl")

// primaryPrefix is pfx, then primary length-prefixed, as queue keys are.
func primaryPrefix(pfx byte, primary string) []byte { return queuePrefix(pfx, primary) }

func shadowKey(primary string, key []byte) []byte {
	return append(primaryPrefix(pfxShadow, primary), key...)
}

func tookOverKey(primary string, key []byte) []byte {
	return append(primaryPrefix(pfxTookOver, primary), key...)
}

func heldStateKey(primary string) []byte { return append([]byte{pfxHeldState}, primary...) }

// replQueueOf returns the queue of a replicated keyspace key (task, dead
// letter, dedup), or false for any other key.
func replQueueOf(key []byte) (string, bool) {
	if len(key) < 2 {
		return "", false
	}
	switch key[0] {
	case pfxTask, pfxDead, pfxDedup:
	default:
		return "", false
	}
	n := int(key[1])
	if n == 0 || len(key) < 2+n {
		return "", false
	}
	return string(key[2 : 2+n]), true
}
