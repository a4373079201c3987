package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox"
)

// startExec runs ServeExec on a pair of pipes, as the sandbox's init
// process does, and returns the worker's Conn and ServeExec's result.
func startExec(t *testing.T, cfg ExecConfig) (*Conn, <-chan error) {
	t.Helper()
	reqR, reqW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		served <- ServeExec(context.Background(), reqR, respW, cfg)
		respW.Close()
	}()
	c := NewConn(reqW, respR, ConnOptions{})
	t.Cleanup(func() {
		c.Close() // ServeExec sees end of input and returns
		<-c.Done()
		reqR.Close()
	})
	return c, served
}

func writeScript(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestServeExec(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "fail.sh", "cat >/dev/null\necho partial\necho 'something broke' >&2\nexit 3\n")
	writeScript(t, dir, "env.sh", "env | grep -E '^(Http_|FOO=)' | LC_ALL=C sort\n")
	writeScript(t, dir, "bin.sh", "printf '\\377\\000'\n")
	tests := []struct {
		name       string
		cfg        ExecConfig
		req        sandbox.Request
		wantStatus int
		wantBody   string // substring
		wantType   string
		wantErr    string
		wantLogs   string
	}{
		{name: "cat echoes the body", cfg: ExecConfig{Argv: []string{"cat"}},
			req:        sandbox.Request{Method: "POST", Path: "/", Body: []byte("héllo")},
			wantStatus: 200, wantBody: "héllo", wantType: "text/plain; charset=utf-8"},
		{name: "binary output", cfg: ExecConfig{Argv: []string{"./bin.sh"}},
			wantStatus: 200, wantBody: "\xff\x00", wantType: "application/octet-stream"},
		{name: "content_type setting", cfg: ExecConfig{Argv: []string{"cat"}, ContentType: "application/json"},
			req:        sandbox.Request{Body: []byte(`{}`)},
			wantStatus: 200, wantBody: "{}", wantType: "application/json"},
		{name: "exit status 3", cfg: ExecConfig{Argv: []string{"fail.sh"}},
			req:        sandbox.Request{Body: []byte("in")},
			wantStatus: 500, wantBody: "partial", wantErr: "exit status 3", wantLogs: "something broke\n"},
		{name: "environment", cfg: ExecConfig{Argv: []string{"./env.sh"}, Env: []string{"FOO=bar"}},
			req: sandbox.Request{Method: "PUT", Path: "/a/b", RawQuery: "x=1&y=2",
				Header: http.Header{"X-Custom-Thing": {"v1", "v2"}, "Content-Type": {"text/csv"}}, Body: []byte("abc")},
			wantStatus: 200,
			wantBody: "FOO=bar\nHttp_ContentLength=3\nHttp_Content_Type=text/csv\nHttp_Method=PUT\n" +
				"Http_Path=/a/b\nHttp_Query=x=1&y=2\nHttp_X_Custom_Thing=v1, v2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Dir = dir
			c, _ := startExec(t, tt.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := c.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
			resp, err := c.RoundTrip(ctx, &tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tt.wantStatus || !strings.Contains(string(resp.Body), tt.wantBody) {
				t.Errorf("got %d %q, want %d %q (error %q, logs %q)", resp.Status, resp.Body, tt.wantStatus, tt.wantBody, resp.Error, resp.Logs)
			}
			if tt.wantType != "" && resp.Header.Get("Content-Type") != tt.wantType {
				t.Errorf("Content-Type = %q, want %q", resp.Header.Get("Content-Type"), tt.wantType)
			}
			if resp.Error != tt.wantErr || string(resp.Logs) != tt.wantLogs {
				t.Errorf("error %q logs %q, want %q %q", resp.Error, resp.Logs, tt.wantErr, tt.wantLogs)
			}
		})
	}
}

func TestServeExecMissingCommand(t *testing.T) {
	tests := []struct {
		name    string
		argv    []string
		setup   func(dir string)
		wantErr string
	}{
		{"not found", []string{"wisp-no-such-command"}, nil, `command "wisp-no-such-command" not found`},
		{"not executable", []string{"./h.sh"}, func(dir string) { _ = os.WriteFile(filepath.Join(dir, "h.sh"), []byte("x"), 0o644) },
			"is not executable (chmod +x ./h.sh)"},
		{"empty", nil, nil, "no command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.setup != nil {
				tt.setup(dir)
			}
			c, served := startExec(t, ExecConfig{Argv: tt.argv, Dir: dir})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.WaitReady(ctx)
			var le *LoadError
			if !errors.As(err, &le) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("WaitReady err = %v, want a LoadError containing %q", err, tt.wantErr)
			}
			if err := <-served; err == nil {
				t.Error("ServeExec returned nil after a failed ready")
			}
		})
	}
}

// Requests beyond the first run concurrently up to Concurrency.
func TestServeExecConcurrency(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "slow.sh", "sleep 0.5\ncat\n")
	c, _ := startExec(t, ExecConfig{Argv: []string{"./slow.sh"}, Dir: dir, Concurrency: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			resp, err := c.RoundTrip(ctx, &sandbox.Request{Body: []byte(strconv.Itoa(i))})
			if err != nil || string(resp.Body) != strconv.Itoa(i) {
				t.Errorf("call %d: %v %v", i, resp, err)
			}
		})
	}
	wg.Wait()
	if d := time.Since(start); d > 1200*time.Millisecond {
		t.Errorf("4 calls took %s, want about 0.5s", d)
	}
}

// The host's own timeout (timeout_ms) kills the child's whole process group.
func TestServeExecTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "bg.pid")
	writeScript(t, dir, "hang.sh", "sleep 30 &\necho $! > "+pidFile+"\nwait\n")
	reqR, reqW, _ := os.Pipe()
	respR, respW, _ := os.Pipe()
	defer respR.Close()
	served := make(chan error, 1)
	go func() {
		served <- ServeExec(context.Background(), reqR, respW, ExecConfig{Argv: []string{"./hang.sh"}, Dir: dir})
		respW.Close()
	}()
	br := bufio.NewReader(respR)
	if _, _, err := ReadFrame(br, DefaultMaxHeader, 0); err != nil { // ready
		t.Fatal(err)
	}
	start := time.Now()
	if err := WriteFrame(reqW, RequestHeader{ID: "1", Method: "GET", Path: "/", TimeoutMS: 300}, nil); err != nil {
		t.Fatal(err)
	}
	hdr, _, err := ReadFrame(br, DefaultMaxHeader, DefaultMaxBody)
	if err != nil {
		t.Fatal(err)
	}
	var resp ResponseHeader
	if err := json.Unmarshal(hdr, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusGatewayTimeout || !strings.Contains(resp.Error, "timeout") {
		t.Errorf("response = %+v, want 504 timeout", resp)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("timed-out call answered after %s", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if alive(pid) {
		t.Errorf("background child %d survived the timeout", pid)
	}
	reqW.Close()
	if err := <-served; err != nil {
		t.Errorf("ServeExec = %v after end of input, want nil", err)
	}
	reqR.Close()
}

// alive reports whether pid runs (a zombie waiting for its reaper is dead).
func alive(pid int) bool {
	for range 50 {
		if syscall.Kill(pid, 0) != nil {
			return false
		}
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false
		}
		if f := strings.Fields(string(stat)); len(f) > 2 && f[2] == "Z" {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func TestServeExecContextEnds(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "hang.sh", "sleep 30\n")
	reqR, reqW, _ := os.Pipe()
	respR, respW, _ := os.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- ServeExec(ctx, reqR, respW, ExecConfig{Argv: []string{"./hang.sh"}, Dir: dir})
	}()
	c := NewConn(reqW, respR, ConnOptions{})
	defer func() {
		c.Close()
		respW.Close()
		reqR.Close()
		<-c.Done()
	}()
	go func() { _, _ = c.RoundTrip(context.Background(), &sandbox.Request{}) }()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-served:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ServeExec = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeExec still running after ctx ended")
	}
}

func TestNewExecConfig(t *testing.T) {
	spec := &function.Spec{Name: "f", Runtime: "exec", Handler: "./run.sh --fast", Concurrency: 3,
		Environment: []string{"content_type=text/html", "A=1"}}
	cfg, err := NewExecConfig(spec, "/code", 0)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Argv, " ") != "./run.sh --fast" || cfg.Dir != "/code" || cfg.Concurrency != 3 ||
		cfg.ContentType != "text/html" {
		t.Errorf("cfg = %+v", cfg)
	}
	spec.Handler = " "
	if _, err := NewExecConfig(spec, "/code", 0); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("empty handler: err = %v, want ErrInvalid", err)
	}
}
