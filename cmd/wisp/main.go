// Command wisp is the wisp CLI and server: `wisp serve` runs the platform,
// the other subcommands talk to it over HTTP. See internal/cli.
package main

import (
	"os"

	"github.com/wisp-faas/wisp/internal/cli"
	"github.com/wisp-faas/wisp/internal/sandbox/container"
	"github.com/wisp-faas/wisp/internal/sandbox/process"
)

func main() {
	// A sandbox's init process is this binary re-executed inside the new
	// namespaces, and a container's entry shim is this binary mounted into
	// the container; neither returns from here.
	process.MaybeRunInit()
	container.MaybeRunInit()
	os.Exit(cli.Main())
}
