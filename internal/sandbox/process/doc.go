// Package process is wisp's "process" execution mode: each function
// instance is a runtime host running in its own set of Linux namespaces,
// cgroup, root filesystem, unprivileged uid and seccomp filter, started by
// re-executing the wisp binary itself. No daemon or image is needed.
//
// Data path: scheduler → Backend.Start → Spawn (this package) → sandbox
// init (this package, inside the new namespaces) → exec of the runtime host
// (python, node) or runtime.ServeExec (exec functions) → handle(request).
//
// # Two layers
//
// Spawn starts one isolated child and returns a *Sandbox handle (pid, wait,
// kill, usage, OOM detection, cleanup). Backend implements sandbox.Backend
// on top of it: it allocates a uid per instance, wires the request and
// response pipes (fd 3 and 4 in the sandbox) to a runtime.Conn, and turns
// deaths into errors that say why ("memory limit 64Mi exceeded").
//
// # How a sandbox starts
//
// The parent creates the cgroup, then clones /proc/self/exe with the hidden
// first argument InitArg into new PID, mount, IPC, UTS and (unless the
// function uses the host network) network namespaces, with Pdeathsig
// SIGKILL and a new session. The init configuration travels as JSON over a
// socketpair (never argv or the environment). On cgroup v2 the child is
// cloned straight into its cgroup (CLONE_INTO_CGROUP); on v1 the parent
// moves it there and then sends a "go" byte. The init, PID 1 of its
// namespaces, then:
//
//  1. makes every mount private, so that nothing it mounts reaches the host
//     (and enters a new cgroup namespace, when "cgroup" is among the
//     namespace types);
//  2. clones read-only, nosuid, nodev mount trees of /usr, /lib, /lib64,
//     /bin, /sbin, /etc (recreating usrmerge symlinks), of the function's
//     code (/code) and of the runtime hosts (/wisp), and of the host's
//     /dev/null, zero, full, random and urandom;
//  3. mounts a tmpfs as the new root (over the host's /tmp, in its own
//     mount namespace), attaches those trees, a fresh /proc, a tmpfs /dev
//     with the device files, /dev/shm and the /dev/fd symlinks, and a
//     size-limited /tmp;
//  4. pivot_roots into it, detaches the old root, and makes / and /dev
//     read-only;
//  5. sets the hostname (wisp-<id>) and brings up lo in the new network
//     namespace;
//  6. drops every capability from the bounding set, sets RLIMIT_CORE to 0,
//     clears supplementary groups, switches to the instance's uid and gid,
//     re-arms Pdeathsig (a credential change clears it), sets
//     no_new_privs and installs the seccomp filter;
//  7. changes to /tmp and either execs the runtime host with a clean
//     environment, or (exec functions) stays resident and serves the
//     channel with runtime.ServeExec.
//
// A failure in any step is reported over the socketpair ("mount /tmp:
// invalid argument") and Spawn returns it.
//
// # Caveats
//
// Binaries that use this package must call MaybeRunInit first thing in
// main (and in TestMain): the sandbox init is this same binary.
//
// The runtime host runs as PID 1 of its namespace: the kernel drops signals
// it has no handler for (SIGKILL always works, and it is all wisp sends),
// and it inherits orphaned grandchildren that a Python or Node host does not
// reap. The exec host's init reaps them.
//
// Killing PID 1 of a PID namespace kills everything in it, so Pdeathsig on
// the init is enough to take a whole sandbox down with a crashed wisp; the
// cgroups it leaves behind are what Backend.Cleanup removes. The kernel
// sends Pdeathsig when the parent's thread that forked the child exits,
// not the parent process; Go threads do not exit unless a goroutine that
// called runtime.LockOSThread returns without unlocking, so callers of
// Spawn must not do that.
//
// Cleanup kills every sandbox below its cgroup parent: two wisp processes
// on one machine need distinct CgroupRoot names.
//
// The init is the whole wisp binary, so a cold start pays for the Go
// runtime and every package's init once more (about 20 ms on the 2-core
// virtual machine it was measured on) before the runtime host starts. The
// exec host's init stays resident and uses a few MB of the function's
// memory limit.
//
// Three ways to start a Python instance, tried in order (Backend.Start):
// a pre-provisioned spare (provision.go: sandbox and host made ahead of
// demand, ~9 ms), a fork from the runtime's zygote (zygote.go: a root
// interpreter with the read-only root assembled clones the child straight
// into its namespaces, ~30 ms, and shares its pages copy-on-write), and the
// plain path above (~95 ms). Every one gives the instance the same
// isolation; the tests of each path check it.
package process
