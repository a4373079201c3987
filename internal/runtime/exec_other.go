//go:build !unix

package runtime

import (
	"syscall"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func newProcessGroup() *syscall.SysProcAttr { return nil }

func killProcessGroup(pid int) error {
	return errdefs.New(errdefs.ErrUnavailable, "run wisp on Linux", "the exec runtime needs process groups")
}
