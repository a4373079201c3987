// Package container is wisp's "container" execution mode: each function
// instance is an OCI container that containerd creates and runc (or crun)
// runs, with the same contract, limits and warm/cold behaviour as process
// mode. The scheduler's pools serve both; this package is only the Backend.
//
// Data path: scheduler → Backend.Start → containerd (snapshot view,
// container, task) → runc → the wisp binary as the container's entry shim
// (MaybeRunInit, PID 1) → runtime host (python, node) or runtime.ServeExec
// (exec) → handle(request).
//
// # Images
//
// A function runs on its runtime's base image, built from the host's own
// interpreter files by internal/image and cached in containerd under
// wisp.local/runtime/RUNTIME:KEY (or on Options.BaseImage, imported or
// pulled). Containers run on a read-only snapshot view of it: nothing is
// copied per container. The function's code is bind-mounted read-only at
// /code, the runtime hosts and the shim at /wisp.
//
// # The channel
//
// containerd gives a task only stdio FIFOs, so the request and response
// channel of internal/runtime travels over a unix socket in a per-instance
// directory, bind-mounted read-only at /run/wisp. The shim connects twice
// (requests, then responses), forks the host with the two connections as
// fds 3 and 4, and stays as the container's init: it forwards SIGTERM,
// reaps orphans and exits with the host's status. The worker wraps its two
// accepted connections in a runtime.Conn. stdout and stderr of the host
// are the instance's log lines.
//
// # Isolation (through the OCI spec)
//
// containerd's default spec (new PID, IPC, UTS, mount and network
// namespaces; masked and read-only /proc paths; a minimal /dev) with:
// a read-only root; a size-limited tmpfs at /tmp (Options.TmpSize, at most
// half the function's memory); an unprivileged uid and gid of its own per
// container (Options.UIDBase), no supplementary groups; every capability
// set empty; no_new_privs; containerd's default seccomp profile; RLIMIT_CORE
// 0; the memory, CPU and pids limits of the spec (the cgroup is
// /CgroupParent/ID, written directly for swap and for spares); only
// loopback unless the spec says network: host (then the host's /etc/hosts
// and resolv.conf too).
//
// # Failures
//
// A call whose context ends kills the container's cgroup and is an
// errdefs.ErrTimeout error; a container that dies is an errdefs.ErrCrashed
// error that says why: "memory limit 64Mi exceeded" when the cgroup counts
// an OOM kill, "exit status N" or "killed by signal N (SIGX)" with the
// host's last line of stderr otherwise. A handler that fails to import
// fails Start with the host's load error.
//
// # Cold starts
//
// On demand, a cold start is: snapshot view and container record (~10
// ms), task create (containerd's shim and runc create, ~125 ms), task start
// (~25 ms), the shim's connection (~20 ms) and the interpreter (~40 ms for
// Python) on the 2-core machine this was measured on. Spare containers
// (spare.go, Options.Spares) do all of that ahead of demand; a cold start
// from a spare links the code into the spare's /code, writes the limits
// into its cgroup and sends the host a load frame: ~9 ms for Python.
//
// # Caveats
//
// Binaries that use this package must call MaybeRunInit first thing in
// main (and in TestMain): the shim is this same binary, and it must run in
// the image, so it is dynamically linked against the host's C library,
// which the locally built images hold; an imported image needs a
// compatible one (or a wisp built with CGO_ENABLED=0).
//
// Cleanup removes every container and active snapshot in the namespace:
// two wisp servers on one machine need distinct namespaces and cgroup
// parents.
//
// crun 1.8 (Debian 12) refuses hosts with cgroup v1 hierarchies and a
// cgroup2 mount beside them (hybrid layout); Check says so. Pure cgroup v1
// and v2 hosts work with both runtimes.
package container
