// Package errdefs defines the closed set of error kinds wisp uses across
// packages. Every error returned to a user wraps exactly one of these kinds
// with context (fmt.Errorf("deploy %q: %w", name, err)); the gateway maps the
// kind to an HTTP status in one place (gateway.statusFor).
//
// An error may also carry a hint: a sentence telling the user what to do.
// Use WithHint to attach one and Hint to read it back.
package errdefs

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalid is returned when user input (a function spec, a config file,
	// a request) is malformed. HTTP 400.
	ErrInvalid = errors.New("invalid")
	// ErrUnauthorized is returned when a call carries no valid API key.
	// HTTP 401.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden is returned when a valid key may not do what it asked
	// (a tenant key managing namespaces). HTTP 403. Another tenant's
	// objects are ErrNotFound, not ErrForbidden, so names do not leak.
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound is returned when a named object does not exist. HTTP 404.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when an object already exists or changed
	// concurrently. HTTP 409.
	ErrConflict = errors.New("conflict")
	// ErrTooLarge is returned when a payload or code archive exceeds its
	// configured limit. HTTP 413.
	ErrTooLarge = errors.New("too large")
	// ErrLimit is returned when a call is refused because a queue or quota is
	// full. HTTP 429.
	ErrLimit = errors.New("over limit")
	// ErrCrashed is returned when a function instance died (crash, OOM kill,
	// failed initialisation) while serving a call. HTTP 502.
	ErrCrashed = errors.New("function crashed")
	// ErrTimeout is returned when a call ran past its function's timeout.
	// HTTP 504.
	ErrTimeout = errors.New("timeout")
	// ErrUnavailable is returned when a component wisp needs is missing or
	// stopped (a Debian package, a daemon, a kernel feature). HTTP 503.
	ErrUnavailable = errors.New("unavailable")
)

type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }

// WithHint attaches a remedy to err. The hint is shown to users beside the
// error message ({"error": ..., "hint": ...}).
func WithHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hinted{err: err, hint: hint}
}

// Hint returns the outermost hint attached to err, or "".
func Hint(err error) string {
	for err != nil {
		switch e := err.(type) {
		case *hinted:
			return e.hint
		case *Error:
			if e.Fix != "" {
				return e.Fix
			}
		}
		err = errors.Unwrap(err)
	}
	return ""
}

// Error is a user-facing error of one kind, with a message that stands on
// its own (the kind is not appended) and an optional hint.
type Error struct {
	Kind error  // one of the Err* kinds above
	Msg  string // what went wrong, naming the object or field
	Fix  string // what to do about it; may be empty
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

// New returns an error of the given kind with a formatted message and a hint.
func New(kind error, hint, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...), Fix: hint}
}

// Invalidf returns an ErrInvalid error with a formatted message and hint.
func Invalidf(hint, format string, args ...any) error {
	return New(ErrInvalid, hint, format, args...)
}
