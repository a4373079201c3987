package telemetry

import (
	"bytes"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestNewLogger(t *testing.T) {
	tests := []struct {
		format, level string
		ok            bool
		want          string
	}{
		{"json", "info", true, `"msg":"hello"`},
		{"text", "debug", true, "msg=hello"},
		{"", "warn", true, ""}, // info is below warn: nothing written
		{"xml", "info", false, ""},
		{"json", "loud", false, ""},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		log, err := NewLogger(&buf, tt.format, tt.level)
		if (err == nil) != tt.ok {
			t.Fatalf("NewLogger(%q, %q) err = %v", tt.format, tt.level, err)
		}
		if err != nil {
			if !strings.Contains(err.Error(), "use ") {
				t.Fatalf("error %q does not say what to use", err)
			}
			continue
		}
		log.Info("hello")
		if tt.want == "" && buf.Len() != 0 || !strings.Contains(buf.String(), tt.want) {
			t.Fatalf("%s/%s wrote %q, want %q", tt.format, tt.level, buf.String(), tt.want)
		}
	}
}

func TestMetricsExposition(t *testing.T) {
	m := NewMetrics()
	m.Invocation("hello", "success", true, 200, 3*time.Millisecond)
	m.Invocation("hello", "success", false, 200, 200*time.Microsecond)
	m.Invocation("hello", "timeout", false, 504, time.Second)
	m.InstanceStarted("hello", "process", 40*time.Millisecond, nil)
	m.InstanceStarted("hello", "process", time.Millisecond, errors.New("boom"))
	m.InstanceStopped("hello", "keep_alive")
	m.InstancesChanged("hello", 0, 2, 1)
	m.ColdStartStages("hello", "process", true, 2*time.Millisecond, 0, 5*time.Millisecond)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	out := string(body)
	for _, want := range []string{
		`wisp_invocations_total{function="hello",start="cold",status="success"} 1`,
		`wisp_invocations_total{function="hello",start="warm",status="timeout"} 1`,
		`wisp_invocation_duration_seconds_count{function="hello",start="warm"} 2`,
		`wisp_cold_start_seconds_count{function="hello",mode="process"} 1`,
		`wisp_cold_start_stage_seconds_count{function="hello",mode="process",provisioned="true",stage="import"} 1`,
		`wisp_cold_start_stage_seconds_sum{function="hello",mode="process",provisioned="true",stage="sandbox"} 0.002`,
		`wisp_instance_starts_total{function="hello",mode="process",result="error"} 1`,
		`wisp_instance_stops_total{function="hello",reason="keep_alive"} 1`,
		`wisp_instances{function="hello",state="idle"} 2`,
		`gateway_function_invocation_total{code="504",function_name="hello"} 1`,
		`gateway_functions_seconds_count{code="200",function_name="hello"} 2`,
		`gateway_service_count{function_name="hello"} 3`,
		`go_goroutines`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	m.Forget("hello")
	rec = httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ = io.ReadAll(rec.Body)
	if strings.Contains(string(body), `wisp_instances{function="hello"`) {
		t.Error("instance gauges of a deleted function remain")
	}
}
