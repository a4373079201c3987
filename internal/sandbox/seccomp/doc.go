// Package seccomp holds the system call filter every strict sandbox runs
// under. The sandbox init (package process) installs it as its last step
// before handing over to the runtime host, after it has built the sandbox's
// mounts, since the filter forbids mounting.
//
// The filter is a deny list on top of a default-allow policy. Docker's and
// Chromium's filters are allow lists, which are tighter but break native
// extensions that use a system call nobody listed; here namespaces, no
// capabilities, a read-only root and an unprivileged uid already take away
// most of what a process could do, and the filter removes the kernel
// interfaces that remain reachable from an unprivileged process and have a
// history of privilege escalations (user namespaces, bpf, userfaultfd,
// io_uring, keyrings, perf events, ...), and the ones that make no sense
// inside a function (mount, reboot, swapon, setting the clock, loading
// modules).
//
// # What it refuses
//
//   - the system calls in Denied, with EPERM;
//   - clone whose flags ask for a new namespace (any of NamespaceFlags),
//     with EPERM; plain fork and thread creation are allowed;
//   - clone3, with ENOSYS: its flags sit behind a pointer a seccomp filter
//     cannot read, so the only safe answer is "not implemented", which makes
//     glibc (2.34+) and Go fall back to clone, where the flags are checked;
//   - the x32 ABI, with ENOSYS, and every other foreign system call ABI (the
//     32-bit int 0x80 entry on amd64, AArch32 on arm64) by killing the
//     process: a filter is written for one ABI's syscall numbers, and a
//     foreign ABI would otherwise walk around it.
//
// # Caveats
//
// Install sets no_new_privs and synchronises the filter to every thread of
// the calling process (SECCOMP_FILTER_FLAG_TSYNC); it cannot be removed, and
// it is inherited by every child. 32-bit binaries cannot run in a sandbox.
package seccomp
