// Package queue is wisp's durable queue of asynchronous invocations. The
// gateway answers POST /async-function/{name} with 202 as soon as Enqueue
// returns, and the call runs later: a worker of the queue takes the job and
// hands it back to the gateway (the Invoker) to run, retries it with backoff
// when it fails in a way that may pass, and posts the outcome to the job's
// callback URL. Cron triggers and NATS subscriptions enqueue here too
// (Job.Source says who did).
//
// The queue is one bbolt file (<data>/queue.db, 0600), separate from the
// store's wisp.db so that the many small commits of the queue do not wait
// behind, or hold up, the registry and the activation log.
//
// # Delivery guarantee
//
// At least once. A job is committed and fsynced before Enqueue returns nil,
// so nothing Enqueue accepted is lost, whatever happens to the process
// afterwards. A job is marked running, in a committed transaction, before
// its attempt starts; if the process dies during the attempt (a crash, kill
// -9, a power cut), the next Open finds the job still running and queues it
// again, and it runs again. The same happens to attempts Close cancels. So a
// function may see the same activation id more than once (the gateway passes
// Job.ID to it as the request's activation id): a function with side effects
// should use that id to make them idempotent. An attempt cut short this way
// is not counted in Job.Attempts (only attempts that returned a Result are),
// so a job that brings down wisp itself runs again after every restart: the
// queue cannot tell it from a power cut.
//
// The outcome is recorded in the same way: Options.Finished is called before
// the final state is committed, so a crash between the two makes the job run
// again rather than be forgotten. Within one process Finished is called
// exactly once each time a job reaches succeeded or failed (a redriven job
// reaches it again); after a crash between the call and the commit, the job
// runs again and Finished is called again. Callbacks are at least once too:
// a finished job whose callback was not yet delivered is remembered
// (callbacks/ below) and delivered after the next Start.
//
// # States
//
//	Enqueue ──► queued ────── claimed by the dispatcher ──────► running
//	             ▲  ▲                                               │
//	             │  └── throttled: at now + RetryAfter, no attempt ◄┤
//	             │      spent; or Retry with attempts left: at      │
//	             │      now + backoff(Attempts)                     │
//	             │                                                  ├──► succeeded ──► pruned after
//	             │                                                  │                  DoneRetention
//	             │                                                  └──► failed ─────► Purge: deleted
//	             └─────────── Redrive: Attempts = 0 ─────────────────────┘
//
//	Open: running ──► queued (the process died, or Close gave up, mid-attempt)
//
// A job enqueued with a NextAt in the future waits for it. failed is the
// dead letter: a failed job stays until it is redriven or purged.
//
// # bbolt schema
//
//	meta/
//	    version                 schema version, decimal ("1")
//	jobs/
//	    <id>                    Job, JSON; ids are UUIDv7 strings, so key order is
//	                            enqueue order and List walks it backwards
//	queued/
//	    <next_at><id>           empty; next_at is Job.NextAt in Unix nanoseconds,
//	                            8 bytes big-endian, so First() is the job to run next
//	running/
//	    <id>                    empty; an attempt is (or was, before a crash) in flight
//	succeeded/
//	    <updated><id>           empty; updated is Job.Updated like next_at, so
//	                            pruning reads the oldest first
//	failed/
//	    <id>                    empty; the dead letters
//	callbacks/
//	    <id>                    empty; a finished job whose callback is not yet
//	                            delivered
//
// Every job in jobs/ has exactly one key in queued/, running/, succeeded/
// or failed/: the one of its State. Every transaction that changes a
// job's state moves that key in the same commit.
//
// Open reads the version key. A file with no version is new and gets the
// current schema; an older version is brought forward by running each entry
// of migrations above it, in order, in one transaction with the version
// bump; a newer version is refused. To change the schema, append a migration
// (schemaVersion follows): never edit one that has shipped.
//
// # Scheduling
//
// One dispatcher goroutine owns scheduling. When a worker slot is free it
// claims the ready jobs (NextAt <= now, oldest NextAt first, up to the
// number of free slots) in one transaction that marks them running, then
// starts one goroutine per claimed attempt. It sleeps until Enqueue, Redrive
// or a finished attempt wakes it, or until the earliest NextAt: it never
// polls. Concurrent Enqueue calls share commits (bbolt's Batch), as do the
// outcomes of concurrent attempts.
//
// A worker slot is held until the job's callback is delivered, so a slow
// callback endpoint slows the queue down instead of piling up goroutines.
// The dispatcher also deletes the succeeded jobs older than
// Options.DoneRetention, every tenth of it (between a second and a minute).
//
// # Concurrency
//
// All methods are safe for concurrent use. Queue.mu guards the counts per
// state (Stats, and the MaxQueued check) and the started and closed flags;
// it is never held across a bbolt transaction or a call out of the package
// (Invoker, Finished, callbacks). Queue.inflight, the busy worker slots, is
// atomic: the dispatcher adds to it, the attempts subtract when they end and
// wake the dispatcher. Close refuses new calls, stops the dispatcher, waits
// for the attempts and for the calls it had admitted, then closes the file.
package queue
