package errdefs

import (
	"errors"
	"fmt"
	"testing"
)

func TestHintSurvivesWrapping(t *testing.T) {
	base := Invalidf("use a name like my-fn", "name %q is invalid", "A B")
	wrapped := fmt.Errorf("deploy: %w", base)
	if !errors.Is(wrapped, ErrInvalid) {
		t.Fatalf("errors.Is(ErrInvalid) = false for %v", wrapped)
	}
	if got := Hint(wrapped); got != "use a name like my-fn" {
		t.Fatalf("Hint = %q", got)
	}
	if got := wrapped.Error(); got != `deploy: name "A B" is invalid` {
		t.Fatalf("Error() = %q", got)
	}
	if Hint(errors.New("plain")) != "" {
		t.Fatal("plain error has a hint")
	}
}
