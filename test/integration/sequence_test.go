package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/wisp-faas/wisp/internal/function"
)

// TestSequence chains three Python functions in real sandboxes, passing a
// 4 MiB payload from step to step, and checks that the sequence's
// activation links its steps' activations.
func TestSequence(t *testing.T) {
	h := startServer(t, testConfig(t, function.ModeProcess), "")
	// Each step appends one byte, so the result proves the order.
	for _, step := range []string{"a", "b", "c"} {
		h.mustDeploy(fn{
			spec:  fmt.Sprintf("name: step-%s\nruntime: python3\nhandler: h.py\nmemory: 128Mi\n", step),
			files: map[string]string{"h.py": fmt.Sprintf("def handle(req):\n    return bytes(req.body) + b%q\n", step)},
		})
	}
	h.mustDeploy(fn{spec: "name: chain\nkind: sequence\nsteps: [step-a, step-b, step-c]\ntimeout: 60s\n"})

	payload := bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16)
	res := h.call("chain", "", string(payload))
	wantStatus(t, res, 200)
	want := append(append([]byte(nil), payload...), "abc"...)
	if !bytes.Equal(res.Body, want) {
		t.Fatalf("chain returned %d bytes ending %q (sha256 %x); want %d bytes ending \"abc\"",
			len(res.Body), res.Body[max(0, len(res.Body)-8):], sha256.Sum256(res.Body), len(want))
	}

	ctx := context.Background()
	a, err := h.c.Activation(ctx, res.ActivationID)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Children) != 3 || a.Status != "success" || a.RequestBytes != int64(len(payload)) {
		t.Fatalf("sequence activation: status %s, %d children, request %d bytes", a.Status, len(a.Children), a.RequestBytes)
	}
	for i, id := range a.Children {
		c, err := h.c.Activation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if c.Parent != a.ID || c.Function != "step-"+string(rune('a'+i)) || c.RequestBytes != int64(len(payload)+i) {
			t.Fatalf("step %d activation: function %s, parent %s, request %d bytes", i+1, c.Function, c.Parent, c.RequestBytes)
		}
	}
}
