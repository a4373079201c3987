package trigger

import (
	"strings"
	"time"
	"unicode"

	"github.com/robfig/cron/v3"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// scheduleHint is the hint of every schedule error: the forms accepted.
const scheduleHint = `write 5 fields (minute hour day month weekday), or 6 with seconds first, ` +
	`or a descriptor (@yearly, @monthly, @weekly, @daily, @hourly, @every 30s); ` +
	`prefix "CRON_TZ=Europe/Paris " to use a time zone other than the server's`

// field describes one position of a cron spec, for error messages.
type field struct {
	name    string
	opt     cron.ParseOption
	allowed string
	example string
}

var (
	secondField = field{"second", cron.Second, "0-59", "*/10"}
	fields5     = []field{
		{"minute", cron.Minute, "0-59", "*/15"},
		{"hour", cron.Hour, "0-23", "9-17"},
		{"day", cron.Dom, "1-31", "1,15"},
		{"month", cron.Month, "1-12 or JAN-DEC", "*/3"},
		{"weekday", cron.Dow, "0-6 (0 is Sunday) or SUN-SAT", "MON-FRI"},
	}
	fields6 = append([]field{secondField}, fields5...)

	// specParser parses 5 fields, or 6 with seconds first.
	specParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
)

// ParseSchedule parses a cron trigger's schedule:
//
//   - 5 fields, minute hour day-of-month month day-of-week, as crontab(5):
//     "*/5 * * * *", "0 9 * * MON-FRI", "0 0 1,15 * *";
//   - 6 fields, with seconds first: "*/10 * * * * *";
//   - a descriptor: @yearly (or @annually), @monthly, @weekly, @daily (or
//     @midnight), @hourly, or "@every <duration>" of whole seconds, at
//     least 1s ("@every 30s", "@every 1h30m"), which fires at that interval
//     from when the trigger was set;
//
// optionally prefixed by "CRON_TZ=<IANA zone> " (or "TZ=<zone> "); without
// it a schedule follows the server's local time zone, as crontab does.
// When both day-of-month and day-of-week are restricted, either matching
// fires (as in crontab).
//
// Errors are errdefs.ErrInvalid and name the bad field with an example.
func ParseSchedule(s string) (cron.Schedule, error) {
	invalid := func(format string, args ...any) error {
		return errdefs.Invalidf(scheduleHint, "schedule %q: "+format, append([]any{s}, args...)...)
	}
	spec := strings.TrimSpace(s)
	loc := time.Local
	if rest, ok := cutTZ(spec); ok {
		name, after := rest, ""
		if i := strings.IndexFunc(rest, unicode.IsSpace); i >= 0 {
			name, after = rest[:i], strings.TrimSpace(rest[i:])
		}
		if name == "" {
			return nil, invalid(`names no time zone, like "CRON_TZ=Europe/Paris 0 9 * * *"`)
		}
		var err error
		if loc, err = time.LoadLocation(name); err != nil {
			return nil, invalid(`unknown time zone %q: use an IANA name, like "CRON_TZ=Europe/Paris 0 9 * * *"`, name)
		}
		if after == "" {
			return nil, invalid(`has a time zone but no schedule, like "CRON_TZ=%s 0 9 * * *"`, name)
		}
		spec = after
	}
	if strings.HasPrefix(spec, "@") {
		return parseDescriptor(spec, loc, invalid)
	}

	parts := strings.Fields(spec)
	var names []field
	switch len(parts) {
	case 5:
		names = fields5
	case 6:
		names = fields6
	default:
		return nil, invalid(`expected 5 fields (minute hour day month weekday), like "*/5 * * * *"`)
	}
	for i, p := range parts {
		f := names[i]
		// A lone field never holds '=' or '@'; the parser would read them
		// as a time zone or a descriptor.
		ok := !strings.ContainsAny(p, "=@")
		if ok {
			_, err := cron.NewParser(f.opt).Parse(p)
			ok = err == nil
		}
		if !ok {
			return nil, invalid("%s field %q is not valid: use %s, *, a list, a range or a step, like %q",
				f.name, p, f.allowed, f.example)
		}
	}
	sched, err := specParser.Parse(strings.Join(parts, " "))
	if err != nil {
		return nil, invalid("%v", err)
	}
	sched.(*cron.SpecSchedule).Location = loc
	if sched.Next(time.Now()).IsZero() {
		return nil, invalid("matches no date (like February 30), so it would never fire")
	}
	return sched, nil
}

// cutTZ returns what follows a "CRON_TZ=" or "TZ=" prefix.
func cutTZ(spec string) (string, bool) {
	if rest, ok := strings.CutPrefix(spec, "CRON_TZ="); ok {
		return rest, true
	}
	return strings.CutPrefix(spec, "TZ=")
}

func parseDescriptor(spec string, loc *time.Location, invalid func(string, ...any) error) (cron.Schedule, error) {
	switch spec {
	case "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly":
		sched, err := specParser.Parse(spec)
		if err != nil {
			return nil, invalid("%v", err)
		}
		sched.(*cron.SpecSchedule).Location = loc
		return sched, nil
	}
	arg, ok := strings.CutPrefix(spec, "@every")
	if !ok {
		return nil, invalid(`unknown descriptor: use @yearly, @monthly, @weekly, @daily, @hourly or @every <duration>, like "@every 30s"`)
	}
	arg = strings.TrimSpace(arg)
	d, err := time.ParseDuration(arg)
	switch {
	case arg == "":
		return nil, invalid(`needs a duration, like "@every 30s"`)
	case err != nil:
		return nil, invalid(`%q is not a duration: write one like "@every 30s" or "@every 1h30m"`, arg)
	case d < time.Second:
		return nil, invalid(`%s is shorter than 1s, the shortest interval: use "@every 1s" or longer`, d)
	case d%time.Second != 0:
		return nil, invalid(`%s is not a whole number of seconds, like "@every 90s"`, d)
	}
	return cron.Every(d), nil
}
