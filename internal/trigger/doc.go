// Package trigger runs the event sources that start async function calls:
// cron schedules and NATS subjects.
//
// # Data path
//
// A Trigger names a function and a source: a cron Schedule or a NATS
// Subject. A Source runs triggers of one type (Cron, NATS; Mux routes by
// type). When a trigger fires, its source builds an Event (the function,
// a body, headers, the time) and hands it to a Firer, which the server
// implements by turning the Event into an async call: a durable queued
// job.
// Fire returns once the job is queued, not when the function has run; the
// function's result is recorded with the job, not returned to the source.
//
// # Cron
//
// Schedules are crontab's 5 fields, an optional sixth for seconds (first),
// descriptors such as @hourly and @every 30s, and an optional CRON_TZ=
// prefix (ParseSchedule). A Cron fires each trigger at its scheduled time,
// on one goroutine that sleeps until the next one is due; Fire calls run
// beside it, so a slow Firer delays no other trigger. The request body is
// the trigger's Body, or {"trigger":ID,"scheduled":RFC 3339 time}.
//
// Missed firings are not caught up. A Cron keeps no state across restarts:
// firings that fell due while the server was down are not run when it
// comes back, and the next firing is the first one after the trigger is
// set. While it runs, a firing found more than CronOptions.Deadline late
// (after a suspend, or a stalled process) is skipped and logged. This
// differs from Kubernetes CronJob, whose controller, without
// startingDeadlineSeconds, starts the most recent missed schedule once when
// it comes back; with a deadline, only one missed by less than it.
//
// # NATS
//
// A NATS trigger subscribes to its subject in a queue group named after
// the trigger (NATSOptions.QueueGroup + "." + ID): wisp nodes that run the
// same trigger share its messages, each message fired once, while two
// triggers on one subject each get every message. A message becomes an
// Event with its body and headers; once Fire returns, a request is
// answered {"queued":true} (or {"error":...}). Delivery is core NATS's,
// at most once: a plain publish is not retried if it is lost. Reconnects
// are nats.go's job: the connection retries forever and restores the
// subscriptions.
//
// # Caveats
//
// Several wisp nodes that each run a Cron with the same triggers each fire
// them: cron has no leader election yet; run cron triggers on one node.
package trigger
