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
// Redeploying a function creates a pool for the new version; the old pool is
// retired: it takes no new calls, its idle instances close at once and busy
// ones close when their calls finish, so calls in flight are not dropped.
//
// Locking: Scheduler.mu guards the pools map; each pool's mu guards its
// instance lists, waiter queue and counters. Never hold Scheduler.mu while
// taking a pool's mu... except in retire, which takes them in that order; no
// code path takes them in the other order.
package scheduler
