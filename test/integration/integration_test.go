package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/client"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/store"
	"github.com/wisp-faas/wisp/internal/testenv"
)

// probe is a Python function that reports what it can see and do from
// inside its sandbox, one operation per call (?op=...).
const probeHandler = `
import ctypes, errno, json, os, socket, time

def _try(fn):
    try:
        return {"ok": True, "value": fn()}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "error": str(e)}

def _write(path):
    with open(path, "w") as f:
        f.write("x")
    return path

def _fill(path, mb):
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(b"\0" * (1 << 20))
    return mb

def handle(req):
    q = req.query
    op = q.get("op")
    if op == "procs":
        return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    if op == "ids":
        return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups()}
    if op == "status":
        out = {}
        for line in open("/proc/self/status"):
            k, _, v = line.partition(":")
            if k in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp"):
                out[k] = v.strip()
        return out
    if op == "write":
        return _try(lambda: _write(q["path"]))
    if op == "fill":
        return _try(lambda: _fill(q["path"], int(q["mb"])))
    if op == "exists":
        return {"exists": os.path.exists(q["path"])}
    if op == "read":
        return _try(lambda: open(q["path"], "rb").read(64).decode(errors="replace"))
    if op == "listdir":
        return _try(lambda: sorted(os.listdir(q["path"])))
    if op == "mount":
        libc = ctypes.CDLL(None, use_errno=True)
        r = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
        return {"ret": r, "errno": ctypes.get_errno()}
    if op == "unshare":
        libc = ctypes.CDLL(None, use_errno=True)
        r = libc.unshare(0x10000000)  # CLONE_NEWUSER
        return {"ret": r, "errno": ctypes.get_errno()}
    if op == "net":
        names = [n for _, n in socket.if_nameindex()]
        def connect():
            s = socket.create_connection((q["host"], int(q["port"])), timeout=2)
            s.close()
            return "connected"
        return {"interfaces": names, "connect": _try(connect)}
    if op == "kill":
        return _try(lambda: os.kill(int(q["pid"]), 9))
    if op == "alloc":
        mb = int(q["mb"])
        blocks = []
        for _ in range(mb):
            blocks.append(bytearray(1 << 20))
        return {"allocated_mb": mb}
    if op == "sleep":
        time.sleep(float(q["s"]))
        return "slept"
    if op == "spin":
        end = time.process_time() + float(q["s"])
        n = 0
        while time.process_time() < end:
            n += 1
        return {"spun": n}
    if op == "forkbomb":
        n = 0
        try:
            for _ in range(1000):
                pid = os.fork()
                if pid == 0:
                    time.sleep(30)
                    os._exit(0)
                n += 1
        except OSError as e:
            return {"forked": n, "errno": e.errno}
        return {"forked": n}
    if op == "exit":
        os._exit(int(q.get("code", "3")))
    if op == "raise":
        print("about to fail")
        return 1 / 0
    if op == "pid":
        return {"pid": os.getpid(), "host": socket.gethostname()}
    return {"method": req.method, "path": req.path, "query": dict(q), "body": req.body.decode()}
`

// probe returns the probe function; extra spec lines override the defaults
// (timeout 5s, memory 64Mi, pids 32).
func probe(name string, extra string) fn {
	spec := fmt.Sprintf("name: %s\nruntime: python3\nhandler: handler.py\n", name)
	for _, def := range []string{"timeout: 5s", "memory: 64Mi", "pids: 32"} {
		key, _, _ := strings.Cut(def, ":")
		if !strings.Contains(extra, key+":") {
			spec += def + "\n"
		}
	}
	return fn{
		spec:  spec + extra,
		files: map[string]string{"handler.py": probeHandler, "secret.txt": "code of " + name},
	}
}

type tryResult struct {
	OK    bool   `json:"ok"`
	Errno int    `json:"errno"`
	Error string `json:"error"`
}

func TestRoundTripEachRuntime(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			h := startServer(t, testConfig(t, mode), "")
			h.mustDeploy(fn{
				spec:  "name: py\nruntime: python3\nhandler: handler.py\n",
				files: map[string]string{"handler.py": "def handle(req):\n    return {'echo': req.body.decode(), 'q': req.query.get('x')}\n"},
			})
			h.mustDeploy(fn{
				spec:  "name: js\nruntime: node\nhandler: handler.js\n",
				files: map[string]string{"handler.js": "exports.handle = async (req) => ({echo: req.text(), q: req.query.x});\n"},
			})
			h.mustDeploy(fn{
				spec:  "name: sh\nruntime: exec\nhandler: run.sh\n",
				files: map[string]string{"run.sh": "#!/bin/sh\necho \"got: $(cat) $Http_Method\"\n"},
				exec:  []string{"run.sh"},
			})
			tests := []struct {
				name, fn, want string
			}{
				{"python", "py", `{"echo":"hi","q":"1"}`},
				{"node", "js", `{"echo":"hi","q":"1"}`},
				{"exec", "sh", "got: hi POST\n"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					res := h.call(tt.fn, "?x=1", "hi")
					wantStatus(t, res, 200)
					if got := strings.TrimSpace(string(res.Body)); got != strings.TrimSpace(tt.want) {
						t.Fatalf("body = %q, want %q", got, tt.want)
					}
					if res.ActivationID == "" || res.Header.Get("X-Wisp-Duration-Ms") == "" {
						t.Fatalf("missing wisp headers: %v", res.Header)
					}
				})
			}
		})
	}
}

func TestWarmReuseAndKeepAliveZero(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			h := startServer(t, testConfig(t, mode), "")
			h.mustDeploy(probe("warm", ""))
			h.mustDeploy(probe("cold", "keep_alive: 0\n"))
			ctx := context.Background()

			r1 := h.call("warm", "?op=pid", "")
			r2 := h.call("warm", "?op=pid", "")
			wantStatus(t, r1, 200)
			wantStatus(t, r2, 200)
			if !r1.Cold || r2.Cold {
				t.Fatalf("cold flags %v, %v; want true then false", r1.Cold, r2.Cold)
			}
			a1, err := h.c.Activation(ctx, r1.ActivationID)
			if err != nil {
				t.Fatal(err)
			}
			a2, _ := h.c.Activation(ctx, r2.ActivationID)
			if a1.InstanceID == "" || a1.InstanceID != a2.InstanceID {
				t.Fatalf("warm call ran on instance %q, first on %q", a2.InstanceID, a1.InstanceID)
			}
			// The cold call's breakdown: in its record and as X-Wisp-Init-Ms.
			if ms, err := strconv.ParseFloat(r1.Header.Get("X-Wisp-Init-Ms"), 64); err != nil || ms <= 0 {
				t.Errorf("cold call X-Wisp-Init-Ms = %q; want the start's milliseconds", r1.Header.Get("X-Wisp-Init-Ms"))
			}
			if got := r2.Header.Get("X-Wisp-Init-Ms"); got != "0" {
				t.Errorf("warm call X-Wisp-Init-Ms = %q; want 0", got)
			}
			for _, k := range []string{"queue_ms", "start_ms", "sandbox_ms", "runtime_ms", "import_ms", "exec_ms"} {
				if _, ok := a1.Timings[k]; !ok {
					t.Errorf("cold activation timings %v lack %s", a1.Timings, k)
				}
			}
			if a1.Timings["sandbox_ms"] <= 0 || a1.Timings["import_ms"] <= 0 ||
				a1.Timings["sandbox_ms"]+a1.Timings["runtime_ms"]+a1.Timings["import_ms"] > a1.Timings["start_ms"]+1 {
				t.Errorf("cold start stages %v do not add up within start_ms", a1.Timings)
			}
			if _, ok := a2.Timings["sandbox_ms"]; ok {
				t.Errorf("warm activation has start stages: %v", a2.Timings)
			}

			seen := map[string]bool{}
			for range 4 {
				r := h.call("cold", "?op=pid", "")
				wantStatus(t, r, 200)
				if !r.Cold {
					t.Fatal("keep_alive 0 call was warm")
				}
				a, err := h.c.Activation(ctx, r.ActivationID)
				if err != nil {
					t.Fatal(err)
				}
				if seen[a.InstanceID] {
					t.Fatalf("keep_alive 0 reused instance %s", a.InstanceID)
				}
				seen[a.InstanceID] = true
			}
		})
	}
}

func TestIsolation(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			h := startServer(t, testConfig(t, mode), "")
			// /tmp is tmpfs, whose pages count against the memory limit:
			// give alice room to fill /tmp to its size limit.
			h.mustDeploy(probe("alice", "memory: 256Mi\n"))
			h.mustDeploy(probe("bob", ""))
			// Bob's code on the host, which Alice must not reach.
			bob, err := h.c.Get(context.Background(), "bob")
			if err != nil {
				t.Fatal(err)
			}
			bobCode := filepath.Join(h.dataDir, "code", strings.TrimPrefix(bob.Digest, "sha256:"))
			if _, err := os.Stat(bobCode); err != nil {
				t.Fatalf("test assumption: bob's code at %s: %v", bobCode, err)
			}
			port := strings.TrimPrefix(h.url, "http://127.0.0.1:")

			t.Run("sees only its own processes", func(t *testing.T) {
				pids := decode[[]int](t, h.call("alice", "?op=procs", ""))
				if len(pids) == 0 || len(pids) > 3 || pids[0] != 1 {
					t.Fatalf("visible pids = %v; want the sandbox's own (pid 1 and maybe a child)", pids)
				}
				// Signalling the server's pid (as seen from the host) fails.
				r := decode[tryResult](t, h.call("alice", fmt.Sprintf("?op=kill&pid=%d", os.Getpid()), ""))
				if r.OK {
					t.Fatal("function killed a host pid")
				}
			})
			t.Run("is not root and has no capabilities", func(t *testing.T) {
				ids := decode[map[string]any](t, h.call("alice", "?op=ids", ""))
				if ids["uid"].(float64) == 0 || ids["euid"].(float64) == 0 || ids["gid"].(float64) == 0 {
					t.Fatalf("function runs as root: %v", ids)
				}
				st := decode[map[string]string](t, h.call("alice", "?op=status", ""))
				if st["CapEff"] != "0000000000000000" || st["CapBnd"] != "0000000000000000" {
					t.Fatalf("capabilities: %v", st)
				}
				if st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" {
					t.Fatalf("no_new_privs/seccomp not set: %v", st)
				}
			})
			t.Run("cannot write outside /tmp", func(t *testing.T) {
				for _, p := range []string{"/x", "/usr/x", "/etc/x", "/code/x", "/wisp/x", "/dev/x"} {
					if r := decode[tryResult](t, h.call("alice", "?op=write&path="+p, "")); r.OK {
						t.Errorf("function wrote %s", p)
					}
				}
				if r := decode[tryResult](t, h.call("alice", "?op=write&path=/tmp/ok", "")); !r.OK {
					t.Fatalf("cannot write /tmp: %+v", r)
				}
				// /tmp is size-limited (process.tmp_size, 64Mi by default).
				r := decode[tryResult](t, h.call("alice", "?op=fill&path=/tmp/big&mb=100", ""))
				if r.OK || r.Errno != 28 {
					t.Fatalf("writing 100 MB into /tmp: %+v; want ENOSPC", r)
				}
			})
			t.Run("cannot read other code or /root", func(t *testing.T) {
				for _, p := range []string{bobCode, h.dataDir, "/root", "/home", "/var/lib"} {
					if r := decode[map[string]bool](t, h.call("alice", "?op=exists&path="+p, "")); r["exists"] {
						t.Errorf("%s is visible inside the sandbox", p)
					}
				}
				own := decode[tryResult](t, h.call("alice", "?op=read&path=/code/secret.txt", ""))
				if !own.OK {
					t.Fatalf("cannot read own code: %+v", own)
				}
				if r := decode[tryResult](t, h.call("alice", "?op=read&path=/etc/shadow", "")); r.OK {
					t.Error("function read /etc/shadow")
				}
			})
			t.Run("cannot mount or make namespaces", func(t *testing.T) {
				r := decode[map[string]int](t, h.call("alice", "?op=mount", ""))
				if r["ret"] == 0 || r["errno"] != 1 {
					t.Fatalf("mount: %v; want EPERM", r)
				}
				r = decode[map[string]int](t, h.call("alice", "?op=unshare", ""))
				if r["ret"] == 0 || r["errno"] != 1 {
					t.Fatalf("unshare(CLONE_NEWUSER): %v; want EPERM", r)
				}
			})
			t.Run("has no network by default", func(t *testing.T) {
				type netResult struct {
					Interfaces []string  `json:"interfaces"`
					Connect    tryResult `json:"connect"`
				}
				r := decode[netResult](t, h.call("alice", "?op=net&host=127.0.0.1&port="+port, ""))
				if len(r.Interfaces) != 1 || r.Interfaces[0] != "lo" {
					t.Fatalf("interfaces = %v; want only lo", r.Interfaces)
				}
				if r.Connect.OK {
					t.Fatal("function reached the host's wisp server over the network")
				}
			})
		})
	}
}

func TestLimitsKeepNodeHealthy(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			h := startServer(t, testConfig(t, mode), "")
			h.mustDeploy(probe("lim", "timeout: 1s\n"))
			t.Run("memory", func(t *testing.T) {
				res := h.call("lim", "?op=alloc&mb=200", "")
				wantStatus(t, res, http.StatusBadGateway)
				if !bytes.Contains(res.Body, []byte("memory limit 64Mi exceeded")) {
					t.Fatalf("body = %s; want the memory limit named", res.Body)
				}
				wantStatus(t, h.call("lim", "?op=pid", ""), 200)
			})
			t.Run("timeout", func(t *testing.T) {
				res := h.call("lim", "?op=sleep&s=30", "")
				wantStatus(t, res, http.StatusGatewayTimeout)
				if res.Duration > 2*time.Second {
					t.Fatalf("timeout answered after %s; want within a second of the 1s limit", res.Duration)
				}
				wantStatus(t, h.call("lim", "?op=pid", ""), 200)
			})
			t.Run("pids", func(t *testing.T) {
				res := h.call("lim", "?op=forkbomb", "")
				wantStatus(t, res, 200)
				r := decode[map[string]int](t, res)
				if r["forked"] >= 32 || r["errno"] != 11 {
					t.Fatalf("fork bomb: %v; want stopped by the pids limit of 32 with EAGAIN", r)
				}
				wantStatus(t, h.call("lim", "?op=pid", ""), 200)
			})
			t.Run("crash is replaced", func(t *testing.T) {
				res := h.call("lim", "?op=exit&code=3", "")
				wantStatus(t, res, http.StatusBadGateway)
				next := h.call("lim", "?op=pid", "")
				wantStatus(t, next, 200)
				if !next.Cold {
					t.Fatal("call after a crash was not served by a new instance")
				}
			})
			t.Run("exception is a 500 with the message", func(t *testing.T) {
				res := h.call("lim", "?op=raise", "")
				wantStatus(t, res, http.StatusInternalServerError)
				if !bytes.Contains(res.Body, []byte("ZeroDivisionError")) {
					t.Fatalf("body = %s", res.Body)
				}
				a, err := h.c.Activation(context.Background(), res.ActivationID)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(a.Logs, "Traceback") || !strings.Contains(a.Logs, "about to fail") {
					t.Fatalf("activation logs lack the output and traceback: %q", a.Logs)
				}
			})
		})
	}
}

func TestAPIErrors(t *testing.T) {
	h := startServer(t, testConfig(t, "process"), "")
	ctx := context.Background()
	t.Run("unknown function is 404", func(t *testing.T) {
		res := h.call("nope", "", "")
		wantStatus(t, res, 404)
		if !bytes.Contains(res.Body, []byte(`"hint"`)) {
			t.Fatalf("404 body lacks a hint: %s", res.Body)
		}
	})
	bad := []struct {
		name string
		f    fn
		want string
	}{
		{"unknown runtime", fn{spec: "name: a\nruntime: ruby\nhandler: h.rb\n"}, "unknown runtime"},
		{"missing handler", fn{spec: "name: a\nruntime: python3\nhandler: nothere.py\n", files: map[string]string{"x.py": ""}}, "nothere.py"},
		{"bad duration", fn{spec: "name: a\nruntime: python3\nhandler: h.py\ntimeout: soon\n", files: map[string]string{"h.py": ""}}, "timeout"},
		{"bad size", fn{spec: "name: a\nruntime: python3\nhandler: h.py\nmemory: lots\n", files: map[string]string{"h.py": ""}}, "memory"},
		{"invalid name", fn{spec: "name: Not_OK\nruntime: python3\nhandler: h.py\n", files: map[string]string{"h.py": ""}}, "name"},
		{"unknown field", fn{spec: "name: a\nruntime: python3\nhandler: h.py\nmemroy: 1Gi\n", files: map[string]string{"h.py": ""}}, "memroy"},
	}
	for _, tt := range bad {
		t.Run("400 "+tt.name, func(t *testing.T) {
			err := h.deploy(tt.f)
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != 400 {
				t.Fatalf("deploy: %v; want HTTP 400", err)
			}
			if !strings.Contains(ce.Error(), tt.want) || ce.Hint == "" {
				t.Fatalf("error %q does not name %q or has no hint", ce.Error(), tt.want)
			}
		})
	}
	t.Run("nothing stored after bad deploys", func(t *testing.T) {
		fns, err := h.c.List(ctx)
		if err != nil || len(fns) != 0 {
			t.Fatalf("functions after failed deploys: %v %v", fns, err)
		}
		blobs, _ := os.ReadDir(filepath.Join(h.dataDir, "blobs", "sha256"))
		code, _ := os.ReadDir(filepath.Join(h.dataDir, "code"))
		if len(blobs) != 0 || len(code) != 0 {
			t.Fatalf("code left after failed deploys: %d blobs, %d unpacked", len(blobs), len(code))
		}
	})
	t.Run("oversized body is 413", func(t *testing.T) {
		h.mustDeploy(probe("big", ""))
		res := h.call("big", "", strings.Repeat("x", 7<<20))
		wantStatus(t, res, 413)
	})
	t.Run("activations and logs", func(t *testing.T) {
		acts, err := h.c.Activations(ctx, store.ActivationFilter{Function: "big"})
		if err != nil || len(acts) == 0 {
			t.Fatalf("activations: %v %v", acts, err)
		}
	})
	t.Run("healthz and metrics", func(t *testing.T) {
		wantStatus(t, h.call("big", "?op=pid", ""), 200)
		hz, err := h.c.Health(ctx)
		if err != nil || hz.Status != "ok" || hz.Modes["process"] != "ready" {
			t.Fatalf("healthz = %+v, %v", hz, err)
		}
		text := h.metrics()
		for _, m := range []string{"wisp_invocations_total", "wisp_invocation_duration_seconds", "wisp_instances",
			"gateway_function_invocation_total", "gateway_functions_seconds"} {
			if !strings.Contains(text, m) {
				t.Errorf("/metrics lacks %s", m)
			}
		}
	})
}

func TestRegistrySurvivesRestart(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			cfg := testConfig(t, mode)
			dir := t.TempDir()
			h := startServer(t, cfg, dir)
			h.mustDeploy(probe("keep", ""))
			r := h.call("keep", "?op=pid", "")
			wantStatus(t, r, 200)
			h.stop()

			h2 := startServer(t, cfg, dir)
			wantStatus(t, h2.call("keep", "?op=pid", ""), 200)
			a, err := h2.c.Activation(context.Background(), r.ActivationID)
			if err != nil || a.Function != "keep" {
				t.Fatalf("activation from before the restart: %+v, %v", a, err)
			}
		})
	}
}

func TestRedeployKeepsCallsInFlight(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			h := startServer(t, testConfig(t, mode), "")
			v1 := fn{spec: "name: rd\nruntime: python3\nhandler: h.py\n",
				files: map[string]string{"h.py": "import time\ndef handle(req):\n    time.sleep(float(req.query.get('s', '0')))\n    return 'v1'\n"}}
			h.mustDeploy(v1)
			var wg sync.WaitGroup
			var slow *client.Result
			wg.Go(func() { slow = h.call("rd", "?s=1.5", "") })
			time.Sleep(500 * time.Millisecond)
			v2 := v1
			v2.files = map[string]string{"h.py": "def handle(req):\n    return 'v2'\n"}
			h.mustDeploy(v2)
			if got := h.call("rd", "", ""); string(got.Body) != "v2" {
				t.Fatalf("after redeploy got %q, want v2", got.Body)
			}
			wg.Wait()
			if slow.Status != 200 || string(slow.Body) != "v1" {
				t.Fatalf("call in flight during redeploy: HTTP %d %q; want 200 v1", slow.Status, slow.Body)
			}
		})
	}
}

func TestCrashRecoveryCleansOrphans(t *testing.T) {
	// A sandbox left by a run that died (kill -9) is removed by the next
	// start: start an instance, kill the server without shutdown, and
	// start a new one on the same data directory and configuration.
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			cfg := testConfig(t, mode)
			if mode == function.ModeContainer {
				testenv.RequireFile(t, cfg.Container.Address, "containerd runc (and start it: containerd &)")
			}
			bin := buildWisp(t)
			dir := t.TempDir()
			cfgFile := filepath.Join(t.TempDir(), "wisp.yaml")
			os.WriteFile(cfgFile, []byte(fmt.Sprintf("execution:\n  default_mode: %s\nprocess:\n  cgroup_root: %s\ncontainer:\n  namespace: %s\nlog:\n  level: warn\n",
				mode, cfg.Process.CgroupRoot, cfg.Container.Namespace)), 0o644)
			port := freePort(t)
			srv := startBinary(t, bin, dir, cfgFile, port)
			c := newClient("http://" + port)
			h := &harness{t: t, c: c, url: "http://" + port, dataDir: dir, cfg: cfg}
			h.mustDeploy(probe("orphan", ""))
			wantStatus(t, h.call("orphan", "?op=pid", ""), 200)
			orphans := liveSandboxes(t, cfg)
			if len(orphans) == 0 {
				t.Fatal("no sandbox found for the running instance")
			}
			srv.Process.Kill() // kill -9: no cleanup
			srv.Wait()
			// The next start cleans up what the crashed run left.
			srv2 := startBinary(t, bin, dir, cfgFile, port)
			defer func() {
				srv2.Process.Signal(syscall.SIGTERM)
				srv2.Wait()
				assertNoLeftovers(t, cfg.Process.CgroupRoot)
				if mode == function.ModeContainer {
					assertNoContainers(t, cfg.Container)
				}
			}()
			deadline := time.Now().Add(10 * time.Second)
			for {
				left := 0
				live := liveSandboxes(t, cfg)
				for id := range orphans {
					if live[id] {
						left++
					}
				}
				if left == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d sandboxes of the killed run remain after restart", left)
				}
				time.Sleep(50 * time.Millisecond)
			}
			wantStatus(t, h.call("orphan", "?op=pid", ""), 200)
		})
	}
}

// Without containerd, the server still starts: process functions serve,
// a container function's deploy is a 503 that says how to fix it, and
// /healthz names the reason.
func TestContainerModeUnavailable(t *testing.T) {
	cfg := testConfig(t, function.ModeProcess)
	cfg.Container.Address = filepath.Join(t.TempDir(), "no-containerd.sock")
	h := startServer(t, cfg, "")
	h.mustDeploy(probe("still-here", ""))
	wantStatus(t, h.call("still-here", "?op=pid", ""), 200)

	err := h.deploy(fn{spec: "name: boxed\nruntime: python3\nhandler: h.py\nexecution_mode: container\n",
		files: map[string]string{"h.py": "def handle(req):\n    return 'x'\n"}})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusServiceUnavailable {
		t.Fatalf("deploy of a container function without containerd: %v; want HTTP 503", err)
	}
	if !strings.Contains(ce.Error(), "containerd") || !strings.Contains(ce.Hint, "apt-get install containerd") {
		t.Fatalf("error %q (hint %q) does not say how to get containerd", ce.Error(), ce.Hint)
	}
	if _, err := h.c.Get(context.Background(), "boxed"); err == nil {
		t.Fatal("the refused function was stored")
	}
	res, err := http.Get(h.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if !bytes.Contains(body, []byte(`"container":`)) || !bytes.Contains(body, []byte("containerd")) {
		t.Fatalf("/healthz does not explain container mode: %s", body)
	}
}

// A deterministic function's repeated request is answered from the result
// cache without running it; a different request, Cache-Control: no-cache
// and a redeploy all run it again.
func TestResultCache(t *testing.T) {
	h := startServer(t, testConfig(t, function.ModeProcess), "")
	det := fn{spec: "name: det\nruntime: python3\nhandler: h.py\ndeterministic: true\n",
		files: map[string]string{"h.py": "n = 0\ndef handle(req):\n    global n\n    n += 1\n    return {'n': n, 'q': req.query.get('x')}\n"}}
	h.mustDeploy(det)
	get := func(query string, header ...string) (string, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, h.url+"/function/det"+query, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 {
			t.Fatalf("HTTP %d: %s", res.StatusCode, body)
		}
		return string(body), res.Header.Get("X-Wisp-Cache")
	}
	steps := []struct {
		name, query  string
		header       []string
		want, result string
	}{
		{"first call runs", "?x=1", nil, `{"n":1,"q":"1"}`, "miss"},
		{"same request hits", "?x=1", nil, `{"n":1,"q":"1"}`, "hit"},
		{"another query runs", "?x=2", nil, `{"n":2,"q":"2"}`, "miss"},
		{"no-cache runs and refreshes", "?x=1", []string{"Cache-Control", "no-cache"}, `{"n":3,"q":"1"}`, "bypass"},
		{"the refreshed entry hits", "?x=1", nil, `{"n":3,"q":"1"}`, "hit"},
	}
	for _, s := range steps {
		body, result := get(s.query, s.header...)
		if strings.TrimSpace(body) != s.want || result != s.result {
			t.Fatalf("%s: body %s, X-Wisp-Cache %q; want %s, %q", s.name, body, result, s.want, s.result)
		}
	}
	// The hit is an activation of its own, marked as such.
	acts, err := h.c.Activations(context.Background(), store.ActivationFilter{Function: "det", Limit: 1})
	if err != nil || len(acts) != 1 || !acts[0].CacheHit {
		t.Fatalf("newest activation %+v, %v; want a cache hit", acts, err)
	}
	// A redeploy clears the function's entries.
	h.mustDeploy(det)
	if body, result := get("?x=1"); result != "miss" || !strings.Contains(body, `"n":1`) {
		t.Fatalf("after redeploy: %s, %q; want a fresh run (miss)", body, result)
	}
	// Non-deterministic functions never see the cache.
	h.mustDeploy(probe("plain", ""))
	if r := h.call("plain", "?op=pid", ""); r.Header.Get("X-Wisp-Cache") != "" {
		t.Fatalf("X-Wisp-Cache on a function that is not deterministic: %q", r.Header.Get("X-Wisp-Cache"))
	}
}

// Authentication is on by default: every route but /healthz needs the
// admin key the server wrote on first start.
func TestAuth(t *testing.T) {
	h := startServer(t, testConfig(t, function.ModeProcess), "")
	h.mustDeploy(probe("guarded", ""))
	st, err := os.Stat(filepath.Join(h.dataDir, "admin.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin.key: %v, mode %v; want a 0600 file", err, st.Mode().Perm())
	}
	plain := &http.Client{Transport: plainTransport}
	tests := []struct {
		name, method, path, auth string
		want                     int
	}{
		{"call without a key", http.MethodPost, "/function/guarded?op=pid", "", http.StatusUnauthorized},
		{"list without a key", http.MethodGet, "/v1/functions", "", http.StatusUnauthorized},
		{"delete without a key", http.MethodDelete, "/v1/functions/guarded", "", http.StatusUnauthorized},
		{"activations without a key", http.MethodGet, "/v1/activations", "", http.StatusUnauthorized},
		{"metrics without a key", http.MethodGet, "/metrics", "", http.StatusUnauthorized},
		{"a wrong key", http.MethodPost, "/function/guarded?op=pid", "Bearer wisp_not-a-key", http.StatusUnauthorized},
		{"not a bearer", http.MethodPost, "/function/guarded?op=pid", "Basic YWRtaW46YWRtaW4=", http.StatusUnauthorized},
		{"health is open", http.MethodGet, "/healthz", "", http.StatusOK},
		{"the admin key", http.MethodPost, "/function/guarded?op=pid", "Bearer " + tokenFor(h.url), http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, h.url+tt.path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			res, err := plain.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.want {
				t.Fatalf("HTTP %d %s; want %d", res.StatusCode, body, tt.want)
			}
			if tt.want == http.StatusUnauthorized {
				if res.Header.Get("WWW-Authenticate") == "" || !bytes.Contains(body, []byte("admin.key")) {
					t.Fatalf("401 without WWW-Authenticate or a hint naming admin.key: %s", body)
				}
			}
		})
	}
	// The refused delete deleted nothing.
	wantStatus(t, h.call("guarded", "?op=pid", ""), 200)
}

// --insecure-no-auth serves without keys (and says so).
func TestInsecureNoAuth(t *testing.T) {
	bin := buildWisp(t)
	cfg := testConfig(t, function.ModeProcess)
	cfgFile := filepath.Join(t.TempDir(), "wisp.yaml")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf("process:\n  cgroup_root: %s\nlog:\n  level: warn\n", cfg.Process.CgroupRoot)), 0o644)
	addr := freePort(t)
	dir := t.TempDir()
	srv := startBinary(t, bin, dir, cfgFile, addr, "--insecure-no-auth")
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		srv.Wait()
	}()
	res, err := (&http.Client{Transport: plainTransport}).Get("http://" + addr + "/v1/functions")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/functions without a key under --insecure-no-auth: HTTP %d", res.StatusCode)
	}
	if _, err := os.Stat(filepath.Join(dir, "admin.key")); err == nil {
		t.Error("an admin key was made although authentication is off")
	}
}

// Energy is measured and attributed: the node's energy over a window is
// shared out between functions, cold starts, idle instances, the platform
// and the rest, the parts add up, and calls carry an estimate.
func TestEnergy(t *testing.T) {
	cfg := testConfig(t, function.ModeProcess)
	cfg.Energy.Interval = function.Duration(200 * time.Millisecond)
	h := startServer(t, cfg, "")
	h.mustDeploy(probe("burner", ""))
	var last *client.Result
	deadline := time.Now().Add(20 * time.Second)
	for {
		last = h.call("burner", "?op=spin&s=0.1", "")
		wantStatus(t, last, 200)
		a, err := h.c.Activation(context.Background(), last.ActivationID)
		if err != nil {
			t.Fatal(err)
		}
		if a.EnergyJ > 0 {
			if a.EnergySource == "" {
				t.Fatalf("activation energy %g J without a source", a.EnergyJ)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no activation got an energy estimate within 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the last call's window closes
	res, err := http.Get(h.url + "/v1/energy?window=1m")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var e struct {
		Source    string             `json:"source"`
		Describe  string             `json:"describe"`
		Node      float64            `json:"node_j"`
		Idle      float64            `json:"idle_j"`
		Function  float64            `json:"function_j"`
		ColdStart float64            `json:"cold_start_j"`
		IdleInst  float64            `json:"idle_instances_j"`
		Platform  float64            `json:"platform_j"`
		Other     float64            `json:"other_j"`
		SPUE      float64            `json:"spue"`
		Functions map[string]float64 `json:"functions"`
	}
	if err := json.NewDecoder(res.Body).Decode(&e); err != nil || res.StatusCode != 200 {
		t.Fatalf("GET /v1/energy: HTTP %d, %v", res.StatusCode, err)
	}
	if e.Source == "" || e.Describe == "" || e.Node <= 0 || e.Function <= 0 || e.Functions["burner"] <= 0 {
		t.Fatalf("energy report %+v; want a source, node and function energy", e)
	}
	if e.Source == "model" && !strings.Contains(e.Describe, "coefficients") {
		t.Errorf("model energy without its coefficients: %q", e.Describe)
	}
	sum := e.Idle + e.Function + e.ColdStart + e.IdleInst + e.Platform + e.Other
	if math.Abs(sum-e.Node) > 0.01*e.Node {
		t.Errorf("parts add up to %.3f J, node %.3f J (more than 1%% apart)", sum, e.Node)
	}
	if e.SPUE < 1 {
		t.Errorf("sPUE %.2f < 1", e.SPUE)
	}
	if _, err := http.Get(h.url + "/v1/energy?window=soon"); err != nil {
		t.Fatal(err)
	}
}

// Scaling starts instances ahead of calls: the next calls are warm.
func TestScale(t *testing.T) {
	h := startServer(t, testConfig(t, function.ModeProcess), "")
	h.mustDeploy(probe("scaled", "max_instances: 3\n"))
	if err := h.c.Scale(context.Background(), "scaled", 5); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := h.c.Get(context.Background(), "scaled")
		if err != nil {
			t.Fatal(err)
		}
		if v.Instances.Idle == 3 {
			break
		}
		if v.Instances.Idle > 3 || time.Now().After(deadline) {
			t.Fatalf("instances %+v; want 3 idle (max_instances caps the 5 asked for)", v.Instances)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := h.call("scaled", "?op=pid", ""); r.Status != 200 || r.Cold {
		t.Fatalf("call after scale: HTTP %d, cold %v; want a warm 200", r.Status, r.Cold)
	}
	// Bad requests name the problem.
	var ce *client.Error
	if err := h.c.Scale(context.Background(), "nope", 2); !errors.As(err, &ce) || ce.Status != 404 {
		t.Fatalf("scale of an unknown function: %v; want 404", err)
	}
	h.mustDeploy(probe("once", "keep_alive: 0\n"))
	if err := h.c.Scale(context.Background(), "once", 2); !errors.As(err, &ce) || ce.Status != 400 {
		t.Fatalf("scale of a keep_alive 0 function: %v; want 400", err)
	}
}

// A burst beyond a function's rate_limit gets 429 with Retry-After; calls
// within it succeed, and the bucket refills.
func TestRateLimit(t *testing.T) {
	h := startServer(t, testConfig(t, function.ModeProcess), "")
	h.mustDeploy(probe("limited", "rate_limit: 2/s\nrate_burst: 5\n"))
	for i := range 5 {
		if r := h.call("limited", "?op=pid", ""); r.Status != 200 {
			t.Fatalf("call %d within the burst: HTTP %d %s", i+1, r.Status, r.Body)
		}
	}
	r := h.call("limited", "?op=pid", "")
	if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" ||
		!bytes.Contains(r.Body, []byte("rate limit of 2/s")) {
		t.Fatalf("call beyond the burst: HTTP %d, Retry-After %q, %s; want 429 naming the limit",
			r.Status, r.Header.Get("Retry-After"), r.Body)
	}
	time.Sleep(600 * time.Millisecond) // one token at 2/s
	if r := h.call("limited", "?op=pid", ""); r.Status != 200 {
		t.Fatalf("call after the bucket refilled: HTTP %d %s", r.Status, r.Body)
	}
	// Other functions are not limited by it.
	h.mustDeploy(probe("free", ""))
	for range 8 {
		wantStatus(t, h.call("free", "?op=pid", ""), 200)
	}
	// A bad limit is a 400 naming the field.
	err := h.deploy(probe("badlimit", "rate_limit: lots\n"))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 400 || !strings.Contains(ce.Error(), "rate_limit") {
		t.Fatalf("deploy with rate_limit: lots: %v; want 400 naming rate_limit", err)
	}
}

// One timeout story: a function's timeout bounds the whole call, and no
// server-side limit is shorter (gateway.read_header_timeout is 10s and
// covers only the request headers).
func TestLongCallWithinItsTimeout(t *testing.T) {
	h := startServer(t, testConfig(t, function.ModeProcess), "")
	h.mustDeploy(probe("long", "timeout: 20s\n"))
	r := h.call("long", "?op=sleep&s=11", "")
	if r.Status != 200 || !bytes.Contains(r.Body, []byte("slept")) {
		t.Fatalf("an 11 s call of a function with timeout 20s: HTTP %d %s", r.Status, r.Body)
	}
	if r.Duration < 11*time.Second {
		t.Fatalf("answered after %s; the handler sleeps 11 s", r.Duration)
	}
}
