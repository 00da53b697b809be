//go:build unix

package bench

import (
	"os/exec"
	"syscall"
)

// ownSession makes cmd start a session of its own (setsid): under Linux's
// autogroup scheduling a session is one scheduling group, as a service or a
// job from another login would be.
func ownSession(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
}
