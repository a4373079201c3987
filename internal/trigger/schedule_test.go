package trigger

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

func TestParseScheduleValid(t *testing.T) {
	// Friday 15 March 2024, 10:02:30 UTC. Schedules without CRON_TZ follow
	// the zone of the time they are asked about, here UTC.
	from := time.Date(2024, 3, 15, 10, 2, 30, 0, time.UTC)
	utc := func(mo time.Month, d, h, mi, s int) time.Time { return time.Date(2024, mo, d, h, mi, s, 0, time.UTC) }
	for _, tc := range []struct {
		spec string
		next time.Time
	}{
		{"*/5 * * * *", utc(3, 15, 10, 5, 0)},
		{"  */5 * * * *  ", utc(3, 15, 10, 5, 0)},
		{"0 9 * * MON-FRI", utc(3, 18, 9, 0, 0)},
		{"0 9 * * 1-5", utc(3, 18, 9, 0, 0)},
		{"0 0 1,15 * *", utc(4, 1, 0, 0, 0)},
		{"30 6 * JAN-JUN ?", utc(3, 16, 6, 30, 0)},
		{"0 0 29 2 *", time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC)},
		{"@hourly", utc(3, 15, 11, 0, 0)},
		{"@daily", utc(3, 16, 0, 0, 0)},
		{"@midnight", utc(3, 16, 0, 0, 0)},
		{"@weekly", utc(3, 17, 0, 0, 0)},
		{"@monthly", utc(4, 1, 0, 0, 0)},
		{"@yearly", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"@annually", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"@every 1s", utc(3, 15, 10, 2, 31)},
		{"@every 30s", utc(3, 15, 10, 3, 0)},
		{"@every 1h30m", utc(3, 15, 11, 32, 30)},
		// Paris is UTC+1 until the end of March: 09:00 there is 08:00 UTC.
		{"CRON_TZ=Europe/Paris 0 9 * * *", utc(3, 16, 8, 0, 0)},
		// New York is on summer time (UTC-4) from 10 March.
		{"TZ=America/New_York 30 6 * * *", utc(3, 15, 10, 30, 0)},
		{"CRON_TZ=UTC @daily", utc(3, 16, 0, 0, 0)},
		// 6 fields: seconds first.
		{"*/10 * * * * *", utc(3, 15, 10, 2, 40)},
		{"0 30 9 * * *", utc(3, 16, 9, 30, 0)},
		{"15 */5 * * * *", utc(3, 15, 10, 5, 15)},
	} {
		sched, err := ParseSchedule(tc.spec)
		if err != nil {
			t.Errorf("ParseSchedule(%q): %v", tc.spec, err)
			continue
		}
		if got := sched.Next(from); !got.Equal(tc.next) {
			t.Errorf("ParseSchedule(%q).Next(%s) = %s; want %s", tc.spec, from, got.UTC(), tc.next)
		}
	}
}

func TestParseScheduleInvalid(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want string // the whole message when it starts with "schedule", else a part of it
	}{
		{"*/5 * *", `schedule "*/5 * *": expected 5 fields (minute hour day month weekday), like "*/5 * * * *"`},
		{"", `schedule "": expected 5 fields (minute hour day month weekday), like "*/5 * * * *"`},
		{"* * * * * * *", `expected 5 fields`},
		{"70 * * * *", `schedule "70 * * * *": minute field "70" is not valid: use 0-59, *, a list, a range or a step, like "*/15"`},
		{"*/0 * * * *", `minute field "*/0" is not valid`},
		{"5-1 * * * *", `minute field "5-1" is not valid`},
		{"x * * * *", `minute field "x" is not valid`},
		{"* 24 * * *", `hour field "24" is not valid: use 0-23`},
		{"* * 0 * *", `day field "0" is not valid: use 1-31`},
		{"* * * 13 *", `month field "13" is not valid: use 1-12 or JAN-DEC`},
		{"* * * * 7", `weekday field "7" is not valid: use 0-6 (0 is Sunday) or SUN-SAT, *, a list, a range or a step, like "MON-FRI"`},
		{"* * * * FOO", `weekday field "FOO" is not valid`},
		{"0 9 * * TZ=UTC", `weekday field "TZ=UTC" is not valid`},
		{"0 9 @daily * *", `day field "@daily" is not valid`},
		{"60 * * * * *", `second field "60" is not valid: use 0-59`},
		{"0 0 30 2 *", `schedule "0 0 30 2 *": matches no date (like February 30), so it would never fire`},
		{"@every", `schedule "@every": needs a duration, like "@every 30s"`},
		{"@every 5", `"5" is not a duration: write one like "@every 30s"`},
		{"@every 500ms", `500ms is shorter than 1s`},
		{"@every -1m", `-1m0s is shorter than 1s`},
		{"@every 1500ms", `1.5s is not a whole number of seconds`},
		{"@fortnightly", `schedule "@fortnightly": unknown descriptor: use @yearly, @monthly, @weekly, @daily, @hourly or @every <duration>, like "@every 30s"`},
		{"@hourly *", `unknown descriptor`},
		{"CRON_TZ=Mars/Olympus */5 * * * *", `unknown time zone "Mars/Olympus": use an IANA name, like "CRON_TZ=Europe/Paris 0 9 * * *"`},
		{"CRON_TZ=UTC", `schedule "CRON_TZ=UTC": has a time zone but no schedule, like "CRON_TZ=UTC 0 9 * * *"`},
		{"CRON_TZ= */5 * * * *", `names no time zone`},
		{"CRON_TZ=UTC CRON_TZ=UTC * * * *", `minute field "CRON_TZ=UTC" is not valid`},
	} {
		_, err := ParseSchedule(tc.spec)
		switch {
		case err == nil:
			t.Errorf("ParseSchedule(%q) = nil error; want %q", tc.spec, tc.want)
			continue
		case !errors.Is(err, errdefs.ErrInvalid):
			t.Errorf("ParseSchedule(%q) = %v; want an ErrInvalid error", tc.spec, err)
		case errdefs.Hint(err) == "":
			t.Errorf("ParseSchedule(%q): no hint", tc.spec)
		}
		if strings.HasPrefix(tc.want, "schedule") && err.Error() != tc.want ||
			!strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSchedule(%q) = %q; want %q", tc.spec, err, tc.want)
		}
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{
		"*/5 * * * *", "0 9 * * MON-FRI", "*/10 * * * * *", "@every 1h30m", "@hourly",
		"CRON_TZ=Europe/Paris 0 9 * * *", "TZ=UTC", "1-2-3 * * * *", "*/99999999999 * * * *", "0 0 30 2 *",
	} {
		f.Add(s)
	}
	from := time.Date(2024, 3, 15, 10, 2, 30, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		sched, err := ParseSchedule(s)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("ParseSchedule(%q) = %v; want an ErrInvalid error", s, err)
			}
			return
		}
		if next := sched.Next(from); !next.After(from) {
			t.Fatalf("ParseSchedule(%q).Next(%s) = %s; want a later time", s, from, next)
		}
	})
}
