package secrets

import "github.com/nats-io/nats-server/v2/server"

// InboxPrefix is the reply-inbox prefix of a role's connections: each role
// may subscribe only under its own, so no other role reads its replies.
func InboxPrefix(r Role) string { return "_I." + string(r) }

// Subjects of the mqmesh protocol the permissions name. They mirror
// mqnode.Subject (mq.<idc>.<node>.<op>), mqnode.IDSubject (mqid.<server>),
// backlog (bl.<tier>..., blsync...) and throttle usage (thr.usage...); a
// test in this package checks them against those packages.
const (
	subjEnqueue = "mq.*.*.enq"
	subjPull    = "mq.*.*.pull"
	subjAck     = "mq.*.*.ack"
	subjInfo    = "mq.*.*.info"
	subjID      = "mqid.>"
	subjBacklog = "bl.>"
	subjBlSync  = "blsync.>"
	subjUsage   = "thr.>"
	subjTrace   = "mqtrace.>" // mqnode.TraceSubject: every node answers trace lookups
	// subjTopics is topic propagation between nodes (mqnode.TopicSyncSubject).
	subjTopics = "mqtopic.>"
	// subjRepl is buddy replication between nodes (mqnode.ReplSubject):
	// only nodes may ship, take over or reconcile.
	subjRepl = "mqrepl.>"
)

// Permissions returns the subject permissions of a role. Least privilege:
//
//	producer  publish enqueue and info requests; read its own replies
//	worker    publish pull, ack (ack, nack, extend) and info requests and
//	          backlog sync requests; read backlog and its own replies
//	admin     publish any request (stats, dlq, members, queue delete, replay, topic, ...);
//	          read backlog, usage and its own replies: it can neither answer
//	          mq.> nor forge backlog, nor read other roles' replies
//	node      everything: it serves requests, publishes its replies,
//	          backlog and usage; accepted in process only (ServerOptions
//	          refuses it on the network), so only a node's own code uses it
//
// Only nodes may publish bl.>, thr.>, mqtopic.> and mqrepl.> and subscribe
// mq.>/mqid.>: a
// stolen worker or admin credential cannot answer a pull or forge backlog.
func Permissions(r Role) *server.Permissions {
	sp := func(allow, deny []string) *server.SubjectPermission {
		return &server.SubjectPermission{Allow: allow, Deny: deny}
	}
	switch r {
	case RoleProducer:
		return &server.Permissions{
			Publish:   sp([]string{subjEnqueue, subjInfo, subjID}, nil),
			Subscribe: sp([]string{InboxPrefix(r) + ".>"}, nil),
		}
	case RoleWorker:
		return &server.Permissions{
			Publish:   sp([]string{subjPull, subjAck, subjInfo, subjID, subjBlSync}, nil),
			Subscribe: sp([]string{subjBacklog, InboxPrefix(r) + ".>"}, nil),
		}
	case RoleAdmin:
		return &server.Permissions{
			Publish:   sp([]string{">"}, []string{subjBacklog, subjUsage, subjTopics, subjRepl, "_I.>", "_INBOX.>"}),
			Subscribe: sp([]string{subjBacklog, subjBlSync, subjUsage, InboxPrefix(r) + ".>"}, nil),
		}
	case RoleNode:
		return &server.Permissions{Publish: sp([]string{">"}, nil), Subscribe: sp([]string{">"}, nil)}
	}
	return &server.Permissions{Publish: sp(nil, []string{">"}), Subscribe: sp(nil, []string{">"})}
}
