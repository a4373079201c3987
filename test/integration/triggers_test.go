package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wisp-faas/wisp/internal/client"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/gateway"
	"github.com/wisp-faas/wisp/internal/store"
	"github.com/wisp-faas/wisp/internal/testenv"
)

// startNATS runs the Debian nats-server on a free port until the test ends.
func startNATS(t *testing.T) string {
	t.Helper()
	bin := "/usr/sbin/nats-server"
	if p, err := exec.LookPath("nats-server"); err == nil {
		bin = p
	}
	if !testenv.Exists(bin) {
		testenv.Missing(t, "nats-server is missing (apt-get install nats-server, or run scripts/setup.sh)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "-p", fmt.Sprint(port), "-a", "127.0.0.1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err == nil {
			nc.Close()
			return url
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// activationsFrom returns fn's activations made by source, oldest first.
func activationsFrom(t *testing.T, c *client.Client, fn, source string) []store.Activation {
	t.Helper()
	acts, err := c.Activations(context.Background(), store.ActivationFilter{Function: fn, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Activation
	for _, a := range acts {
		if a.Source == source {
			out = append(out, a)
		}
	}
	slices.Reverse(out)
	return out
}

// TestTriggers fires functions from a schedule in their spec, from a cron
// trigger object and from a NATS subject on a real nats-server, in real
// time.
func TestTriggers(t *testing.T) {
	cfg := testConfig(t, function.ModeProcess)
	cfg.Triggers.NATSURL = startNATS(t)
	h := startServer(t, cfg, "")
	ctx := context.Background()

	// A schedule in the spec: every second, each call on time.
	h.mustDeploy(fn{spec: "name: tick\nruntime: python3\nhandler: h.py\nschedule: \"@every 1s\"\n",
		files: map[string]string{"h.py": "def handle(req):\n    return req.json()['scheduled']\n"}})
	var ticks []store.Activation
	waitFor(t, "three scheduled calls", func() bool {
		ticks = activationsFrom(t, h.c, "tick", "cron:fn:tick")
		return len(ticks) >= 3
	})
	for _, a := range ticks {
		scheduled, err := time.Parse(time.RFC3339, strings.Trim(string(a.Result), `"`))
		if err != nil || a.State != "succeeded" {
			t.Fatalf("scheduled call %+v: %v", a, err)
		}
		// The call started within a second of its scheduled time.
		if late := a.Start.Sub(scheduled); late < 0 || late > time.Second {
			t.Errorf("call scheduled for %s started %s later", scheduled.Format(time.RFC3339Nano), late)
		}
	}
	// Redeployed without a schedule, it stops firing.
	h.mustDeploy(fn{spec: "name: tick\nruntime: python3\nhandler: h.py\n",
		files: map[string]string{"h.py": "def handle(req):\n    return 'manual'\n"}})
	time.Sleep(1200 * time.Millisecond)
	n := len(activationsFrom(t, h.c, "tick", "cron:fn:tick"))
	time.Sleep(2 * time.Second)
	if m := len(activationsFrom(t, h.c, "tick", "cron:fn:tick")); m != n {
		t.Errorf("a function redeployed without schedule was called %d more times", m-n)
	}
	// A bad schedule is a 400 at deploy.
	err := h.deploy(fn{spec: "name: bad-sched\nruntime: python3\nhandler: h.py\nschedule: \"*/5 * *\"\n",
		files: map[string]string{"h.py": "def handle(req):\n    return 1\n"}})
	if ce, ok := err.(*client.Error); !ok || ce.Status != 400 || !strings.Contains(ce.Error(), "schedule") {
		t.Errorf("deploy with a bad schedule: %v", err)
	}

	// Trigger objects: a NATS subject and a cron schedule calling upper.
	h.mustDeploy(fn{spec: "name: upper\nruntime: python3\nhandler: h.py\n",
		files: map[string]string{"h.py": "def handle(req):\n    return req.text.upper()\n"}})
	if _, err := h.c.CreateTrigger(ctx, gateway.TriggerRequest{Name: "orders", Function: "upper", Type: "nats", Subject: "orders.created"}); err != nil {
		t.Fatal(err)
	}
	v, err := h.c.CreateTrigger(ctx, gateway.TriggerRequest{Name: "every", Function: "upper", Type: "cron", Schedule: "@every 1s", Body: "tock"})
	if err != nil || v.Next == nil {
		t.Fatalf("create cron trigger: %+v %v", v, err)
	}
	nc, err := nats.Connect(cfg.Triggers.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msg, err := nc.Request("orders.created", []byte("order 42"), 5*time.Second)
	if err != nil || !strings.Contains(string(msg.Data), "queued") {
		t.Fatalf("NATS request: %v %s", err, msg.Data)
	}
	waitFor(t, "the NATS-triggered call", func() bool {
		acts := activationsFrom(t, h.c, "upper", "nats:orders.created")
		return len(acts) == 1 && string(acts[0].Result) == "ORDER 42"
	})
	waitFor(t, "the cron trigger's calls", func() bool {
		acts := activationsFrom(t, h.c, "upper", "cron:default/every")
		return len(acts) >= 2 && string(acts[0].Result) == "TOCK"
	})
	list, err := h.c.Triggers(ctx, false)
	if err != nil || len(list) != 2 {
		t.Fatalf("trigger list: %+v %v", list, err)
	}
	for _, bad := range []gateway.TriggerRequest{
		{Name: "x", Function: "upper", Type: "nats", Subject: "a..b"},
		{Name: "y", Function: "upper", Type: "cron", Schedule: "whenever"},
		{Name: "Bad Name", Function: "upper", Type: "cron", Schedule: "@hourly"},
	} {
		if _, err := h.c.CreateTrigger(ctx, bad); err == nil || err.(*client.Error).Status != http.StatusBadRequest {
			t.Errorf("create %+v: %v, want 400", bad, err)
		}
	}
	if _, err := h.c.CreateTrigger(ctx, gateway.TriggerRequest{Name: "z", Function: "nope", Type: "cron", Schedule: "@hourly"}); err == nil ||
		err.(*client.Error).Status != http.StatusNotFound {
		t.Errorf("trigger of an unknown function: %v, want 404", err)
	}
	// Removing the triggers stops them.
	for _, name := range []string{"orders", "every"} {
		if err := h.c.DeleteTrigger(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1200 * time.Millisecond)
	n = len(activationsFrom(t, h.c, "upper", "cron:default/every"))
	nc.Publish("orders.created", []byte("late order"))
	time.Sleep(2 * time.Second)
	if m := len(activationsFrom(t, h.c, "upper", "cron:default/every")); m != n {
		t.Errorf("a removed cron trigger fired %d more times", m-n)
	}
	if acts := activationsFrom(t, h.c, "upper", "nats:orders.created"); len(acts) != 1 {
		t.Errorf("a removed NATS trigger fired: %d calls", len(acts))
	}
}
