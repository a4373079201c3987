package testenv

import (
	"fmt"
	"testing"
)

// recorder stands in for a test: it records what Missing asked for.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }
func (r *recorder) Skip(a ...any)                  { r.skip = fmt.Sprint(a...) }

func TestMissingFailsUnderCI(t *testing.T) {
	for _, ci := range []string{"true", ""} {
		t.Setenv("CI", ci)
		r := &recorder{TB: t}
		Missing(r, "no %s here", "containerd")
		switch {
		case ci == "true" && (r.fatal == "" || r.skip != ""):
			t.Errorf("CI=true: fatal %q, skip %q; want a failure", r.fatal, r.skip)
		case ci == "" && (r.skip != "no containerd here" || r.fatal != ""):
			t.Errorf("CI unset: fatal %q, skip %q; want a skip", r.fatal, r.skip)
		}
	}
}

func TestBuffer(t *testing.T) {
	var b Buffer
	done := make(chan struct{})
	go func() {
		for range 100 {
			b.Write([]byte("x"))
		}
		close(done)
	}()
	_ = b.String()
	<-done
	if got := len(b.String()); got != 100 {
		t.Fatalf("len = %d", got)
	}
}
