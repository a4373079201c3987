// Package experiment runs seed 000's study (and seed 001's benchmark
// families) against a running wisp server: `wisp experiment run PLAN.yaml
// --out DIR`. It deploys the functions it needs itself (their Python code is
// embedded here), drives them over the HTTP API on every execution mode the
// plan names, joins each call with its activation record (stage timings,
// instance, energy), measures energy per window, and writes calls.csv,
// summary.json, report.md and PNG figures.
//
// # Plan
//
// A plan is YAML; unknown fields are errors, and validation errors name the
// field (scenarios[2].calls: must be positive, got 0).
//
//	name: quick                 # report title
//	description: ...
//	modes: [process, container] # execution modes to compare; A = the first (baseline), B = the second
//	skip_unavailable: true      # skip a mode /healthz does not report ready (else fail)
//	seed: 1                     # Poisson arrivals are reproducible
//	settle: 2s                  # pause between scenario runs
//	prefix: exp                 # deployed functions are named exp-<scenario>-<code>-<p|c><n>
//	memory: 256Mi               # spec of every deployed function
//	cpu: 1000m
//	large_mb: 50                # what the large function loads at start-up
//	energy:
//	  source: auto              # auto: the server's /v1/energy, else the harness's model; model: always the model
//	  idle_watts: 0             # model coefficients for the node; 0, 0 = internal/energy's defaults
//	  max_watts: 0
//	scenarios:                  # run in order, each on every mode in turn
//	  - {name: idle, kind: idle, duration: 1h, warm_instances: 0}
//	  - {kind: cold, functions: [small, medium, large], calls: 100, interval: 0s}
//	  - {kind: warm, function: small, warmup: 10, calls: 1000, concurrency: [1], keep_alive: 10m}
//	  - {kind: poisson, function: small, rates: [10, 50, 100, 500, 1000], duration: 30m, keep_alive: 10m}
//	  - {kind: keepalive, function: small, keep_alives: [0s, 10s, 60s, 600s], rate: 100, duration: 20m, arrival: poisson}
//	  - {kind: breakdown, functions: [small, medium, large], calls: 20}
//	  - {kind: chain, sizes: [1KiB, 64KiB, 1MiB, 4MiB], calls: 50, warmup: 3}
//	  - {kind: stateless, variants: [reload, cached, passed], state_size: 1MiB, calls: 100}
//	  - {kind: parallel, function: small, concurrency: [1, 2, 4, 8, 16], calls: 500, work_ms: 5}
//
// The kinds:
//
//   - idle: nothing runs for duration; node power and energy. With
//     warm_instances N, N instances of the small function are started first
//     and left idle, so that (P_N − P_0)/N is one idle instance's power.
//   - cold: keep_alive 0, so every call starts an instance; calls calls of
//     each function one after another (interval apart).
//   - warm: keep_alive (default 10m); warmup calls, then calls calls with concurrency
//     callers (closed loop).
//   - poisson: open-loop Poisson arrivals at each rate (invocations per
//     minute) for duration, with the function's keep_alive; max_in_flight
//     bounds open calls (a call past it is recorded as dropped, not delayed).
//   - keepalive: one window per keep_alives value at rate per minute
//     (arrival poisson or constant) for duration: cold %, latency, idle
//     instance-seconds and their energy.
//   - breakdown: calls cold calls, then calls warm ones, of each function;
//     the report averages the activation records' stages (queue, sandbox,
//     runtime, import, exec).
//   - chain: function A answers a payload of each size, which the harness
//     sends to function B; rows chain-a, chain-b and chain (A + B).
//   - stateless: state_size of JSON state; reload re-reads and parses it on
//     every call (a stateless function), cached keeps it in the instance,
//     passed receives it in every request.
//   - parallel: for each concurrency level, warmup × level calls to start
//     the instances, then calls calls with level callers: throughput and
//     latency as concurrency grows (IBM owperf's measure).
//
// The functions are Python: small (hello; ?sleep_ms and ?work_ms), medium
// (imports json, re, hashlib, csv, decimal, email, xml … at start-up), large
// (commits large_mb MiB at start-up), chain and state. work_ms adds that
// much CPU spinning to every call of small.
//
// # Energy
//
// With source auto the harness asks the server for GET
// /v1/energy?window=DURATION at the end of every window ({"source",
// "describe", "node_j", "function_j", "overhead_j", "spue", "functions":
// {name: J}}) and reads each activation's energy_j and energy_source. A
// server without the endpoint (404) gets the harness's model instead:
// internal/energy's Model over this machine's /proc/stat, P = P_idle +
// (P_max − P_idle) × u, with the plan's or internal/energy's default
// coefficients, printed in the report; a call's function energy is then
// (P_max − P_idle)/CPUs × its exec_ms. Every figure says its source.
//
// # Outputs
//
// calls.csv has one row per call (scenario, kind, variant, mode, function,
// call index, start, latency, cold, init, server time, stage timings,
// status, error, activation and instance ids, payload bytes, energy and its
// source). summary.json has per scenario × variant × mode × function: n,
// mean, median, p95, p99, the 95 % CI of the mean, cold %, throughput, node
// and function energy per invocation, sPUE, idle instance-seconds; Welch's
// t-tests between the first two modes (and cold vs warm), one-way ANOVAs
// across modes and across variants, the keep-alive curve, the startup
// breakdown and seed 000's hypothesis table with verdicts. report.md shows
// all of it with the machine, the plan and the energy source, and links the
// figures (latency CDFs, cold vs warm, energy per invocation, sPUE, the
// keep-alive trade-off, throughput, chain latency). All statistics come
// from internal/stats.
package experiment
