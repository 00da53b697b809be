package secrets_test

import (
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/mqmesh/mqmesh/backlog"
	"github.com/mqmesh/mqmesh/internal/secrets"
	"github.com/mqmesh/mqmesh/mqnode"
)

// matches reports whether subject matches the NATS pattern (* one token,
// > the rest).
func matches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

func allowed(sp *server.SubjectPermission, subject string) bool {
	ok := false
	for _, a := range sp.Allow {
		ok = ok || matches(a, subject)
	}
	for _, d := range sp.Deny {
		if matches(d, subject) {
			return false
		}
	}
	return ok
}

// TestPermissionsFollowTheProtocolSubjects checks the role permissions
// against the subjects the packages really use, so a renamed subject cannot
// silently lock a role out or let one in.
func TestPermissionsFollowTheProtocolSubjects(t *testing.T) {
	op := func(o string) string { return mqnode.Subject("idcA", "n1", o) }
	inbox := func(r secrets.Role) string { return secrets.InboxPrefix(r) + ".AbC.1" }
	bl := backlog.Subject(backlog.TierIDC, "idcA", "n1", "jobs")
	sync := backlog.SyncSubject(backlog.TierHost, "idcA", "n1")
	usage := mqnode.UsageSubject("idcA", "n1")
	repl := mqnode.ReplSubject("idcA", "n1", "ship")
	cases := []struct {
		role       secrets.Role
		pub, noPub []string
		sub, noSub []string
	}{
		{secrets.RoleProducer,
			[]string{op(mqnode.OpEnqueue), op(mqnode.OpInfo), mqnode.IDSubject("NSRV")},
			[]string{op(mqnode.OpPull), op(mqnode.OpAck), op(mqnode.OpStats), op(mqnode.OpDLQ), op(mqnode.OpQueueDelete), bl, usage, inbox(secrets.RoleWorker), repl},
			[]string{inbox(secrets.RoleProducer)},
			[]string{">", op(mqnode.OpEnqueue), bl, inbox(secrets.RoleWorker), repl}},
		{secrets.RoleWorker,
			[]string{op(mqnode.OpPull), op(mqnode.OpAck), op(mqnode.OpInfo), mqnode.IDSubject("NSRV"), sync},
			[]string{op(mqnode.OpEnqueue), op(mqnode.OpStats), op(mqnode.OpDLQ), op(mqnode.OpQueueDelete), bl, usage, repl},
			[]string{bl, inbox(secrets.RoleWorker)},
			[]string{">", op(mqnode.OpPull), mqnode.IDSubject("NSRV"), usage, inbox(secrets.RoleProducer), repl}},
		{secrets.RoleAdmin,
			[]string{op(mqnode.OpStats), op(mqnode.OpDLQ), op(mqnode.OpQueueDelete), op("members"), op(mqnode.OpEnqueue), op(mqnode.OpPull)},
			[]string{bl, usage, inbox(secrets.RoleWorker), repl},
			[]string{bl, usage, inbox(secrets.RoleAdmin)},
			[]string{">", op(mqnode.OpPull), mqnode.IDSubject("NSRV"), inbox(secrets.RoleWorker), repl}},
		{secrets.RoleNode,
			[]string{bl, usage, inbox(secrets.RoleWorker), op(mqnode.OpStats), repl},
			nil,
			[]string{op(mqnode.OpPull), mqnode.IDSubject("NSRV"), sync, usage, repl},
			nil},
	}
	for _, c := range cases {
		p := secrets.Permissions(c.role)
		for _, s := range c.pub {
			if !allowed(p.Publish, s) {
				t.Errorf("%s may not publish %s", c.role, s)
			}
		}
		for _, s := range c.noPub {
			if allowed(p.Publish, s) {
				t.Errorf("%s may publish %s", c.role, s)
			}
		}
		for _, s := range c.sub {
			if !allowed(p.Subscribe, s) {
				t.Errorf("%s may not subscribe %s", c.role, s)
			}
		}
		for _, s := range c.noSub {
			if allowed(p.Subscribe, s) {
				t.Errorf("%s may subscribe %s", c.role, s)
			}
		}
	}
}
