//go:build unix

package runtime

import "syscall"

// newProcessGroup puts an exec handler in its own process group, so that a
// timeout kills everything it started.
func newProcessGroup() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func killProcessGroup(pid int) error {
	return syscall.Kill(-pid, syscall.SIGKILL)
}
