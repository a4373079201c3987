// Package scheduler decides which sandbox instance serves each call: per
// function it keeps a pool of instances, reuses warm ones (most recently used
// first), starts cold ones up to max_instances, queues calls beyond that in a
// bounded FIFO (then refuses them with errdefs.ErrLimit), evicts instances
// idle longer than keep_alive, and replaces instances that die.
//
// Cold starts never stampede: a call that finds no free instance joins the
// pool's wait queue, and the pool starts a new instance only while fewer
// instances are starting than calls are waiting. A started instance serves
// whichever call has waited longest, so a burst of N calls against a cold
// function starts at most min(N, max_instances) instances.
//
// Pipelining (pickLocked): when every instance of a function is busy, its
// instances are serial (sandbox.Instance.Serial: one call at a time, in
// order) and its calls are short, a call may queue inside the busiest
// instance that has room instead of in the pool: up to
// Config.PipelineDepth calls, and only while those ahead of it, times the
// function's average handler time, fit in Config.PipelineMaxWait. Its host
// then reads the next call as soon as it answers one, instead of sleeping
// and being woken for each. A queued call has not started; if its instance
// dies first it fails with sandbox.ErrNotStarted and Invoke sends it to
// another instance. Such a call also starts one more instance (up to
// max_instances), so packing never keeps a busy function on fewer
// instances than waiting would have.
//
// keep_alive: auto (adaptive.go, internal/keepalive) learns each function's
// idle times: an idle instance stays for the policy's keep-alive window,
// and when the policy predicts the next call far enough ahead, instances
// unload right after a call and one is started in the background just
// before the call is expected (pre-warm). What was learned carries over to
// the next version's pool.
//
// Redeploying a function creates a pool for the new version; the old pool is
// retired: it takes no new calls, its idle instances close at once and busy
// ones close when their calls finish, so calls in flight are not dropped.
//
// Locking: Scheduler.mu, a RWMutex since every call reads the pools map,
// guards the pools map, the closed flag and the live digest counts; each
// pool's mu guards its instance lists, waiter queue and counters. The only
// order is Scheduler.mu, then a pool's mu (poolFor retires the old pool
// while holding Scheduler.mu), then a keep_alive auto policy's own lock; no
// code takes Scheduler.mu while holding a pool's mu. Instance starts and closes run in goroutines tracked by
// Scheduler.bg, outside both locks.
package scheduler
