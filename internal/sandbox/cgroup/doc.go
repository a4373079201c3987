// Package cgroup puts each sandbox in its own control group, so that its
// memory, CPU and process count are capped and its resource use can be read
// back for billing, energy attribution and crash reasons ("memory limit 64Mi
// exceeded").
//
// # Layout
//
// A Manager owns one parent group (by default "wisp") and creates one child
// group per sandbox below it:
//
//	cgroup v2 (unified):  /sys/fs/cgroup/wisp/<id>
//	cgroup v1 (legacy):   /sys/fs/cgroup/{memory,cpu,cpuacct,pids,freezer}/wisp/<id>
//
// The version is detected once in New: the presence of
// /sys/fs/cgroup/cgroup.controllers means a pure v2 host; otherwise the v1
// hierarchies are used (a hybrid host's /sys/fs/cgroup/unified has no useful
// controllers and is ignored). On v2 the memory, cpu and pids controllers are
// enabled in cgroup.subtree_control of every ancestor of the sandbox groups.
//
// # Lifecycle
//
//	m, _ := cgroup.New("wisp")             // at startup
//	_ = m.Cleanup()                         // groups a crashed run left behind
//	g, _ := m.Create(id, cgroup.Limits{…})  // per sandbox, before it starts
//	_ = g.AddProc(pid)                      // v1; on v2 prefer clone into g.FD()
//	u, _ := g.Usage()
//	_ = g.Kill()                            // every process in the group
//	_ = g.Remove()                          // rmdir; succeeds once it is empty
//
// Nothing in this package keeps state outside the cgroup filesystem, so a new
// process can find, kill and remove the groups of an old one (Cleanup).
//
// # Caveats
//
// Memory limits disable swap where the kernel allows it (v1
// memory.memsw.limit_in_bytes, v2 memory.swap.max), so a limit is a limit on
// RAM, not on RAM plus swap. CPU limits are a CFS quota over a 100 ms period.
// On v1 the OOM kill count comes from memory.oom_control (kernel 4.13+), with
// memory.failcnt as a coarse fallback on older kernels.
package cgroup
