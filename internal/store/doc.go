// Package store keeps what a wisp node must remember across restarts: the
// function registry, the functions' code, and activation records (one per
// call: status, timings, logs, result). It is embedded (bbolt and plain
// files in one data directory, no server) and is used by the gateway (CRUD
// on functions, activation queries), the scheduler (CodeDir when it starts
// an instance) and every invocation (RecordActivation).
//
// # On-disk layout
//
//	<dir>/                     0711: sandboxes may traverse it, not list it
//	├── wisp.db                bbolt, 0600; flock'ed by the one wisp serve that owns <dir>
//	├── blobs/                 0700
//	│   ├── sha256/<hex>       code archives (tar.gz), content addressed, 0444
//	│   └── ingest/            uploads in progress (PutCode); emptied by Open
//	└── code/                  0711
//	    ├── <hex>/             unpacked archive <hex>: dirs 0755, files 0644 or 0755,
//	    │                      owned by the wisp serve user (root), so readable but not
//	    │                      writable by the unprivileged uid of a sandbox
//	    ├── .extract-<hex>-*   extraction in progress; renamed to <hex> when complete
//	    └── .trash-*           a directory GCCode is deleting
//	                           (dot names are never served, and Open removes them)
//
// A blob is named by the SHA-256 of its bytes, so uploading the same archive
// twice stores it once, and a digest in a FunctionRecord names exactly one
// content. A code directory is derived data: it can always be rebuilt from
// its blob, and is created by rename so it is either absent or complete.
//
// # bbolt schema
//
//	meta/
//	    version                 schema version, decimal ("4")
//	    activation_count        number of keys in activations/, decimal
//	functions/
//	    <ref>                   FunctionRecord, JSON; ref is the name in the default
//	                            namespace, "name.namespace" in another (function.Ref)
//	activations/
//	    <id>                    Activation, JSON; id is a UUIDv7 string, so key
//	                            order is time order and First() is the oldest
//	activations_by_function/
//	    <ref>\x00<id>           empty; newest-first listing per function
//	keys/                       (schema 2)
//	    <sha256 hex of the key> APIKey, JSON; the key itself is never stored
//	namespaces/                 (schema 3)
//	    <name>                  Namespace, JSON: a tenant and its quotas (the
//	                            default namespace is implicit, never stored)
//	triggers/                   (schema 4)
//	    <namespace>/<name>      TriggerRecord, JSON: a cron or NATS trigger
//
// The version key is read by Open. A database with no version is new and
// gets the current schema; an older version is brought forward by running
// each entry of migrations above it, in order, in one transaction with the
// version bump; a newer version is refused (an older wisp must not rewrite a
// schema it does not know); internal/boltschema does this for the store and
// the async queue alike. To change the schema, append a migration (the
// version follows): never edit one that has shipped.
//
// # Activations
//
// RecordActivation runs on every call, so it only truncates the record to
// the limits and appends it to an in-memory queue; one writer goroutine
// commits the queue in batches (every Options.FlushInterval, or as soon as
// Options.BatchSize records wait), each batch in a single bbolt transaction
// that also deletes the oldest records beyond Options.ActivationRetention.
// A full queue blocks RecordActivation (backpressure) instead of dropping
// records. Records still queued are visible to GetActivation and
// ListActivations (read-your-writes), and Flush and Close wait for the queue
// to drain.
//
// # Code garbage collection
//
// Deleting or updating a function leaves its old blob and code directory
// behind, because calls in flight may still be running from that directory.
// GCCode removes the blobs and directories that no function references,
// except those named in its keep argument (the digests live instances still
// use: the scheduler knows them) and those younger than
// Options.GCGracePeriod (a blob just uploaded by PutCode and not yet named by
// PutFunction; a directory just used by CodeDir, which refreshes its
// modification time). Call it after DeleteFunction or PutFunction, or
// periodically.
//
// # Concurrency
//
// All methods are safe for concurrent use. Store.gcMu is held for writing
// by GCCode (and DiscardCode) while they decide what is unreferenced and
// remove it, and for reading while a digest is being referenced
// (PutFunction) or a directory installed or touched (CodeDir, PutCode), so
// collection never removes what is being put to use. Store.flightMu guards
// the extraction in progress per digest; activationQueue.mu guards the
// activation queue. No two of these are ever held together; bbolt
// transactions may be opened while holding gcMu, never the other way round.
package store
