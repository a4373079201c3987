package trigger

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Trigger types.
const (
	TypeCron = "cron"
	TypeNATS = "nats"
)

// Event is one firing of a trigger. The server turns it into an async call:
// a durable queued job for Function in Namespace.
type Event struct {
	Trigger   string // the trigger's ID
	Namespace string
	Function  string // plain function name
	Source    string // "cron:<trigger id>" or "nats:<subject>" (the subject the message was published on)
	Body      []byte
	// Header holds request headers for the call: Content-Type for cron, the
	// message headers (keys in canonical form) for NATS.
	Header http.Header
	Time   time.Time // scheduled time (cron) or receive time (nats)
}

// Firer starts the call an Event asks for. It must return only once the
// call is durably queued: a Source acknowledges the event (replies to a
// NATS request) when Fire returns nil, and an error is logged with the
// trigger's ID (and, for NATS, returned to the requester).
type Firer interface {
	Fire(ctx context.Context, ev Event) error
}

// FirerFunc adapts a function to Firer.
type FirerFunc func(ctx context.Context, ev Event) error

// Fire calls f.
func (f FirerFunc) Fire(ctx context.Context, ev Event) error { return f(ctx, ev) }

// Source is a running set of triggers of one type. Set adds or replaces a
// trigger by ID, Remove stops it (an unknown ID is ignored), Close stops
// them all. Methods are safe for concurrent use.
type Source interface {
	Set(t Trigger) error
	Remove(id string)
	Close() error
}

var (
	_ Source = (*Cron)(nil)
	_ Source = (*NATS)(nil)
	_ Source = Mux(nil)
)

// Trigger is a configured event source that calls one function.
type Trigger struct {
	// ID is unique across triggers: "<namespace>/<name>" for a standalone
	// trigger, "fn:<ref>" for a function's own schedule.
	ID        string `json:"id"`
	Namespace string `json:"namespace,omitempty"`
	Function  string `json:"function"`
	Type      string `json:"type"` // TypeCron or TypeNATS
	// Schedule (cron): 5 fields (minute hour day month weekday), or 6 with
	// seconds first, or a descriptor (@hourly, @every 30s), optionally
	// prefixed by "CRON_TZ=Europe/Paris ". See ParseSchedule.
	Schedule string `json:"schedule,omitempty"`
	// Subject (nats): the subject to subscribe to; wildcards (* and >) allowed.
	Subject string `json:"subject,omitempty"`
	// Body (cron): the request body sent to the function. Default: a small
	// JSON object {"trigger": ID, "scheduled": RFC 3339 time}.
	Body string `json:"body,omitempty"`
}

// nameRE is the shape of function and namespace names (a DNS label, as
// internal/function checks them). This package does not import
// internal/function, so that function.Spec.Validate can check a spec's
// schedule with ParseSchedule.
var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// maxIDLen bounds a trigger ID; it also names the NATS queue group.
const maxIDLen = 256

// Validate checks t and returns an errdefs.ErrInvalid error that names the
// field and says how to fix it.
func (t Trigger) Validate() error {
	bad := func(field, hint, format string, args ...any) error {
		return errdefs.Invalidf(hint, "trigger %q: field %s: "+format, append([]any{t.ID, field}, args...)...)
	}
	switch {
	case t.ID == "":
		return bad("id", `name the trigger, like "team-a/nightly"`, "is required")
	case len(t.ID) > maxIDLen:
		return bad("id", "use a shorter name", "is longer than %d bytes", maxIDLen)
	case strings.IndexFunc(t.ID, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		return bad("id", `use letters, digits and punctuation, like "team-a/nightly"`, "must not contain spaces or control characters")
	case t.Function == "":
		return bad("function", "name the function the trigger calls, like function: hello", "is required")
	case strings.Contains(t.Function, "."):
		return bad("function", "give the plain function name and put the namespace in the namespace field",
			"%q is a reference, not a plain function name", t.Function)
	case !nameRE.MatchString(t.Function):
		return bad("function", "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit",
			"%q is not a valid function name", t.Function)
	}
	if t.Namespace != "" && !nameRE.MatchString(t.Namespace) {
		return bad("namespace", "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit",
			"%q is not a valid namespace name", t.Namespace)
	}
	switch t.Type {
	case TypeCron:
		if t.Subject != "" {
			return bad("subject", "remove subject, or use type: nats", "is only for nats triggers")
		}
		if t.Schedule == "" {
			return bad("schedule", `add a schedule, like "*/5 * * * *" or "@hourly"`, "is required for a cron trigger")
		}
		if _, err := ParseSchedule(t.Schedule); err != nil {
			return fmt.Errorf("trigger %q: %w", t.ID, err)
		}
	case TypeNATS:
		if t.Schedule != "" {
			return bad("schedule", "remove schedule, or use type: cron", "is only for cron triggers")
		}
		if t.Body != "" {
			return bad("body", "remove body: a nats trigger sends the message's body", "is only for cron triggers")
		}
		if t.Subject == "" {
			return bad("subject", `add the subject to listen on, like "orders.created" or "orders.>"`, "is required for a nats trigger")
		}
		if err := checkSubject(t.Subject); err != nil {
			return bad("subject", `use dot-separated tokens; * matches one token, > the rest (last), like "orders.*.created"`,
				"%q %v", t.Subject, err)
		}
	case "":
		return bad("type", "add type: cron or type: nats", "is required")
	default:
		return bad("type", "use cron or nats", "unknown trigger type %q", t.Type)
	}
	return nil
}

// checkSubject checks a NATS subject for subscribing: non-empty tokens
// separated by dots, no whitespace, wildcards only as whole tokens and >
// only last.
func checkSubject(s string) error {
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		return errors.New("must not contain spaces or control characters")
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		switch {
		case tok == "":
			return errors.New("has an empty token (a leading, trailing or double dot)")
		case tok == ">" && i != len(toks)-1:
			return errors.New("has > before its last token")
		case tok != "*" && tok != ">" && strings.ContainsAny(tok, "*>"):
			return errors.New("uses * or > inside a token; a wildcard must be a whole token")
		}
	}
	return nil
}

// Mux routes each trigger to the Source for its type, so the server holds
// one Source for all its triggers. A type with no Source (a server started
// without NATS) refuses its triggers with errdefs.ErrUnavailable.
type Mux map[string]Source

// Set validates t, removes it from the sources of other types (its type
// may have changed) and sets it in the source of its type.
func (m Mux) Set(t Trigger) error {
	if err := t.Validate(); err != nil {
		return err
	}
	s, ok := m[t.Type]
	if !ok {
		hint := "use a cron trigger"
		if t.Type == TypeNATS {
			hint = "configure a NATS server URL for wisp, or use a cron trigger"
		}
		return errdefs.New(errdefs.ErrUnavailable, hint, "trigger %q: this wisp server has no %s trigger source", t.ID, t.Type)
	}
	for typ, other := range m {
		if typ != t.Type {
			other.Remove(t.ID)
		}
	}
	return s.Set(t)
}

// Remove removes the trigger from every source.
func (m Mux) Remove(id string) {
	for _, s := range m {
		s.Remove(id)
	}
}

// Close closes every source.
func (m Mux) Close() error {
	var errs []error
	for _, s := range m {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// checkType returns an ErrInvalid error if t is not of type typ.
func checkType(t Trigger, typ string) error {
	if t.Type != typ {
		return errdefs.Invalidf("set it in the "+t.Type+" source (trigger.Mux routes by type)",
			"trigger %q: a %s source cannot run a %q trigger", t.ID, typ, t.Type)
	}
	return nil
}
