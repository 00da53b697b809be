package mqnode

const crashChildEnv = "MQNODE_CRASH_CHILD"

func crashChild() int { return 0 }
