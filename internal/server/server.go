// Package server is wisp's composition root: it loads the system config,
// opens the store, prepares the execution backends, and wires the scheduler,
// gateway and telemetry into one HTTP server; it also owns the lifecycle
// (crash cleanup at start, drain and sandbox teardown at SIGTERM).
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // profiles on --debug-addr only: they are served from http.DefaultServeMux, which the API does not use
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"time"

	"github.com/wisp-faas/wisp/internal/auth"
	"github.com/wisp-faas/wisp/internal/cache"
	"github.com/wisp-faas/wisp/internal/config"
	"github.com/wisp-faas/wisp/internal/energy"
	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/gateway"
	"github.com/wisp-faas/wisp/internal/meter"
	"github.com/wisp-faas/wisp/internal/queue"
	"github.com/wisp-faas/wisp/internal/runtime"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/sandbox/container"
	"github.com/wisp-faas/wisp/internal/sandbox/process"
	"github.com/wisp-faas/wisp/internal/scheduler"
	"github.com/wisp-faas/wisp/internal/store"
	"github.com/wisp-faas/wisp/internal/telemetry"
	"github.com/wisp-faas/wisp/internal/trigger"
)

// Options are the `wisp serve` flags.
type Options struct {
	ConfigPath string // system config file; "" for defaults
	DataDir    string
	Listen     string // overrides gateway.listen when set
	Demo       bool   // deploy the examples at start
	Version    string
	Stdout     io.Writer // where the startup banner goes
	Stderr     io.Writer // where logs go
	// Ready, if set, receives the listening address once the server serves.
	Ready func(addr string)
	// Config, if set, is used instead of loading ConfigPath (tests).
	Config *config.Config
	// DebugAddr, if set, serves Go's pprof profiles there (keep it on
	// loopback: profiles reveal memory contents).
	DebugAddr string
	// InsecureNoAuth turns API key checks off (local experiments only).
	InsecureNoAuth bool
}

// Run serves until ctx ends, then shuts down cleanly.
func Run(ctx context.Context, o Options) error {
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	cfg := config.Default()
	switch {
	case o.Config != nil:
		cfg = *o.Config
	case o.ConfigPath != "":
		var err error
		if cfg, err = config.Load(o.ConfigPath); err != nil {
			return err
		}
	}
	if o.Listen != "" {
		cfg.Gateway.Listen = o.Listen
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, err := telemetry.NewLogger(o.Stderr, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		return err
	}
	if os.Getenv("GOMAXPROCS") == "" {
		procs := min(cfg.Gateway.ServerProcs(goruntime.NumCPU()), goruntime.GOMAXPROCS(0))
		defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(procs))
	}
	if o.DataDir == "" {
		o.DataDir = ".wisp-data"
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return fmt.Errorf("data directory %s: %w", o.DataDir, err)
	}

	st, err := store.Open(dataDir, store.Options{
		MaxCodeSize:         int64(cfg.Store.MaxCodeSize),
		MaxUnpackedSize:     int64(cfg.Store.UnpackedLimit()),
		ActivationRetention: cfg.Store.ActivationRetention,
		LogLimit:            int(cfg.Store.LogLimit),
		ResultLimit:         int(cfg.Store.ResultLimit),
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()

	runtimeDir := filepath.Join(dataDir, "runtime")
	if err := runtime.Extract(runtimeDir); err != nil {
		return fmt.Errorf("extract runtime hosts: %w", err)
	}
	launcher := runtime.Launcher{Python: cfg.Process.Python, Node: cfg.Process.Node}

	backends := map[string]sandbox.Backend{}
	modes := map[string]error{}
	pb, err := process.New(process.Config{
		CgroupRoot:     cfg.Process.CgroupRoot,
		UIDBase:        cfg.Process.UIDBase,
		UIDCount:       cfg.Process.UIDCount,
		TmpSize:        int64(cfg.Process.TmpSize),
		NamespaceTypes: cfg.Process.Namespaces(),
		IsolationLevel: cfg.Process.IsolationLevel,
		RuntimeDir:     runtimeDir,
		Launcher:       launcher,
		Conn:           runtime.ConnOptions{LogLimit: int(cfg.Store.LogLimit)},
		Provisioned:    cfg.Process.Provisioned,
		Zygote:         cfg.Process.Zygote,
		StageDir:       filepath.Join(dataDir, "stage"),
	}, log.With("mode", function.ModeProcess))
	if err == nil {
		err = pb.Check(ctx)
	}
	if err != nil {
		log.Error("process mode unavailable", "err", err)
		modes[function.ModeProcess] = err
	} else {
		if err := pb.Cleanup(ctx); err != nil {
			log.Warn("clean up after an earlier run", "err", err)
		}
		backends[function.ModeProcess] = pb
		modes[function.ModeProcess] = nil
	}

	cb, err := container.New(container.Options{
		Address:   cfg.Container.Address,
		Namespace: cfg.Container.Namespace,
		Runtime:   cfg.Container.Runtime,
		BaseImage: cfg.Container.BaseImage,
		StateDir:  filepath.Join(dataDir, "container"),
		TmpSize:   int64(cfg.Container.TmpSize),
		Spares:    cfg.Container.Provisioned,
		UIDBase:   cfg.Container.UIDBase,
		UIDCount:  cfg.Container.UIDCount,
		Launcher:  launcher,
		Conn:      runtime.ConnOptions{LogLimit: int(cfg.Store.LogLimit)},
		Log:       log.With("mode", function.ModeContainer),
	})
	if err == nil {
		err = cb.Check(ctx)
	}
	if err != nil {
		// Not fatal: the other modes serve, and container functions get
		// this error (with its fix) when they are deployed.
		log.Warn("container mode unavailable", "err", err, "hint", errdefs.Hint(err))
		modes[function.ModeContainer] = err
		cb = nil
	} else {
		if err := cb.Cleanup(ctx); err != nil {
			log.Warn("clean up containers after an earlier run", "err", err)
		}
		backends[function.ModeContainer] = cb
		modes[function.ModeContainer] = nil
	}

	metrics := telemetry.NewMetrics()

	// Energy accounting: the best source this node has (RAPL, perf's power
	// PMU, else the CPU-time model), sampled with every sandbox's CPU time.
	var mtr *meter.Meter
	src, skipped, err := energy.Best(ctx, energy.Options{Model: energy.ModelConfig{
		IdleWatts: cfg.Energy.ModelIdleWatts, MaxWatts: cfg.Energy.ModelMaxWatts}})
	if err != nil {
		log.Warn("energy accounting off: no energy source", "err", err)
	} else {
		defer src.Close()
		idle := cfg.Energy.IdleWatts
		if mdl, ok := src.(*energy.Model); ok {
			idle = mdl.Config().IdleWatts
		}
		reasons := make([]string, 0, len(skipped))
		for _, u := range skipped {
			reasons = append(reasons, u.String())
		}
		log.Info("energy source", "source", src.Kind(), "describe", src.Describe(), "not_used", reasons)
		mtr, err = meter.New(meter.Options{Source: src, IdleWatts: idle, Interval: cfg.Energy.Interval.D(),
			History: cfg.Energy.History.D(), OnWindow: metrics.Energy, Log: log.With("component", "meter")})
		if err != nil {
			return err
		}
		for mode, b := range backends {
			backends[mode] = mtr.WrapBackend(b)
		}
		mctx, stopMeter := context.WithCancel(context.Background())
		defer stopMeter()
		go mtr.Run(mctx)
	}
	sched := scheduler.New(scheduler.Config{
		MaxConcurrent:    cfg.Execution.MaxConcurrentFunctions,
		ColdStartTimeout: cfg.Execution.ColdStartTimeout.D(),
		MaxQueue:         cfg.Execution.MaxQueue,
		QueueTimeout:     cfg.Execution.QueueTimeout.D(),
		PipelineDepth:    cfg.Execution.PipelineDepth,
		PipelineMaxWait:  cfg.Execution.PipelineMaxWait.D(),
	}, backends, log, scheduler.Observer{
		InstanceStarted:  metrics.InstanceStarted,
		InstanceStopped:  metrics.InstanceStopped,
		InstancesChanged: metrics.InstancesChanged,
		Pipelined:        metrics.Pipelined,
		Redispatched:     metrics.Redispatched,
	})

	var authn *auth.Authenticator
	var adminKey, keyFile string
	if o.InsecureNoAuth {
		log.Warn("INSECURE: API authentication is off (--insecure-no-auth): anyone who can reach " + cfg.Gateway.Listen +
			" can deploy and run code on this machine. Use it only for local experiments.")
	} else {
		var made bool
		keyFile, made, err = auth.EnsureAdminKey(ctx, st, dataDir)
		if err != nil {
			_ = sched.Close(context.Background())
			return fmt.Errorf("make the admin API key: %w", err)
		}
		if made {
			log.Info("admin API key created: every API call needs Authorization: Bearer <key>", "file", keyFile)
		} else {
			log.Info("API calls need Authorization: Bearer <key>", "admin_key_file", keyFile)
		}
		adminKey, _ = auth.ReadKeyFile(keyFile)
		authn, err = auth.NewAuthenticator(ctx, st,
			fmt.Sprintf("send Authorization: Bearer <key>; the admin key is in %s (export WISP_TOKEN=$(cat %s) for the CLI)", keyFile, keyFile))
		if err != nil {
			_ = sched.Close(context.Background())
			return err
		}
	}

	// Async calls wait in a durable queue in the data directory; the
	// gateway runs them (Start below). Triggers (cron, NATS) enqueue into it.
	var gw *gateway.Gateway
	tenantCallbacks := queue.PublicClient(queue.DefaultCallbackTimeout)
	q, err := queue.Open(filepath.Join(dataDir, "queue.db"), queue.Options{
		Workers: cfg.Async.Workers, MaxQueued: cfg.Async.MaxQueued,
		BackoffBase: cfg.Async.BackoffBase.D(), BackoffMax: cfg.Async.BackoffMax.D(),
		DoneRetention: cfg.Async.DoneRetention.D(), ResultLimit: int(cfg.Store.ResultLimit),
		Finished: func(j *queue.Job, r queue.Result) { gw.AsyncFinished(j, r) },
		// Tenants' callbacks may not reach the wisp host or its private
		// network; the default namespace's (admins') may.
		ClientFor: func(j *queue.Job) *http.Client {
			if j.Namespace != "" {
				return tenantCallbacks
			}
			return nil
		},
		Logger: log.With("component", "queue"),
	})
	if err != nil {
		_ = sched.Close(context.Background())
		return fmt.Errorf("open the async queue: %w", err)
	}
	metrics.QueueDepth(q.Stats)
	firer := trigger.FirerFunc(func(ctx context.Context, ev trigger.Event) error { return gw.Fire(ctx, ev) })
	cron := trigger.NewCron(firer, trigger.CronOptions{Logger: log.With("component", "cron")})
	triggers := trigger.Mux{trigger.TypeCron: cron}
	if cfg.Triggers.NATSURL != "" {
		nc, err := trigger.NewNATS(cfg.Triggers.NATSURL, firer, trigger.NATSOptions{Name: "wisp", Logger: log.With("component", "nats")})
		if err != nil {
			log.Error("NATS triggers off: cannot reach the NATS server", "url", cfg.Triggers.NATSURL, "err", err, "hint", errdefs.Hint(err))
		} else {
			triggers[trigger.TypeNATS] = nc
		}
	}
	// stopAsync stops the triggers (if stopTriggers has not), then the
	// queue's workers (an attempt still running past ctx stays queued on
	// disk for the next start).
	var stopTriggersOnce sync.Once
	stopTriggers := func() { stopTriggersOnce.Do(func() { _ = triggers.Close() }) }
	stopAsync := func(ctx context.Context) error {
		stopTriggers()
		if err := q.Close(ctx); err != nil {
			return fmt.Errorf("stop the async queue: %w", err)
		}
		return nil
	}

	gw, err = gateway.New(ctx, gateway.Config{
		MaxBodySize: int64(cfg.Gateway.MaxBodySize),
		MaxCodeSize: int64(cfg.Store.MaxCodeSize),
		Baseline:    cfg.Baseline(),
		Modes:       modes,
		CheckRuntime: func(spec *function.Spec) error {
			_, err := launcher.Interpreter(spec.Runtime)
			return err
		},
		Version: o.Version,
		Auth:    authn,
		Meter:   mtr,
		Cache: cache.New(cache.Options{MaxEntries: cfg.Cache.MaxEntries,
			MaxEntrySize: int(cfg.Cache.MaxEntrySize), TTL: cfg.Cache.TTL.D()}),
		Queue:    q,
		Triggers: cronMux{Mux: triggers, cron: cron},
	}, st, sched, metrics, log)
	if err != nil {
		_ = stopAsync(context.Background())
		_ = sched.Close(context.Background())
		return err
	}
	ln, err := net.Listen("tcp", cfg.Gateway.Listen)
	if err != nil {
		_ = stopAsync(context.Background())
		_ = sched.Close(context.Background())
		return fmt.Errorf("listen on %s: %w (is another wisp serve running? pick another address with --listen)", cfg.Gateway.Listen, err)
	}
	// Async work starts once the node can serve: queued calls, then the
	// triggers that add to them.
	q.Start(gw)
	if err := gw.StartTriggers(ctx); err != nil {
		log.Error("triggers not started", "err", err)
	}
	cron.Start()
	srv := &http.Server{
		Handler:           gw,
		ReadHeaderTimeout: cfg.Gateway.ReadHeaderTimeout.D(),
		// No WriteTimeout: each call is bounded by its function's timeout,
		// and a server-wide write limit would cut long functions short.
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if o.DebugAddr != "" {
		dbg := &http.Server{Addr: o.DebugAddr, Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := dbg.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("debug server", "addr", o.DebugAddr, "err", err)
			}
		}()
		defer dbg.Close()
		log.Info("pprof profiles served", "addr", "http://"+o.DebugAddr+"/debug/pprof/")
	}
	addr := ln.Addr().String()
	log.Info("wisp serving", "addr", addr, "data", dataDir, "version", o.Version, "procs", goruntime.GOMAXPROCS(0))
	if o.Ready != nil {
		o.Ready(addr)
	}
	if o.Demo {
		if err := deployDemo(ctx, "http://"+addr, adminKey, keyFile, o.Stdout); err != nil {
			log.Error("deploy the examples", "err", err)
		}
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		_ = stopAsync(context.Background())
		_ = sched.Close(context.Background())
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("shutting down: draining calls in flight", "timeout", cfg.Gateway.ShutdownTimeout.D())
	// Triggers stop firing at once. The HTTP calls in flight drain first
	// (an async call accepted meanwhile still reaches the queue), then the
	// queue's attempts in flight, each within the shutdown timeout; an
	// attempt still running then stays queued on disk for the next start.
	stopTriggers()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Gateway.ShutdownTimeout.D())
	defer cancel()
	var errs []error
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("drain HTTP: %w", err))
	}
	qctx, qcancel := context.WithTimeout(context.Background(), cfg.Gateway.ShutdownTimeout.D())
	defer qcancel()
	if err := stopAsync(qctx); err != nil {
		errs = append(errs, err)
	}
	if err := sched.Close(sctx); err != nil {
		errs = append(errs, err)
	}
	if pb != nil {
		// Removes stragglers and the parent cgroup itself: nothing of this
		// run remains.
		if err := pb.Destroy(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("remove sandboxes: %w", err))
		}
	}
	if cb != nil {
		if err := cb.Destroy(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("remove containers: %w", err))
		}
	}
	log.Info("stopped: every sandbox removed")
	return errors.Join(errs...)
}

// cronMux is the server's trigger sources, which also tell when a cron
// trigger fires next (gateway.NextFirer).
type cronMux struct {
	trigger.Mux
	cron *trigger.Cron
}

func (m cronMux) Next(id string) (time.Time, bool) { return m.cron.Next(id) }
