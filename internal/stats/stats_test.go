package stats

import (
	"bufio"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// load reads testdata/NAME: '#' lines are comments, data lines are "value"
// or "group value". It returns the groups in order of first appearance.
func load(t *testing.T, name string) [][]float64 {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		groups [][]float64
		index  = map[string]int{}
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		key := ""
		if len(fields) == 2 {
			key = fields[0]
		}
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		i, ok := index[key]
		if !ok {
			i = len(groups)
			index[key] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return groups
}

// relErr is |got − want| / |want| (or |got| when want is 0).
func relErr(got, want float64) float64 {
	if want == 0 {
		return math.Abs(got)
	}
	return math.Abs(got-want) / math.Abs(want)
}

func TestNISTUnivariate(t *testing.T) {
	tests := []struct {
		file        string
		n           int
		mean, sd    float64
		tolM, tolSD float64 // relative
	}{
		{"Michelso.dat", 100, 299.852400000000, 0.0790105478190518, 1e-14, 1e-12},
		// 8 constant leading digits: float64 cannot hold 10000000.1 exactly,
		// so about 8 significant digits of the 0.1 survive (R: 0.100000000558794).
		{"NumAcc4.dat", 1001, 10000000.2, 0.1, 1e-15, 1e-8},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			xs := load(t, tt.file)[0]
			if len(xs) != tt.n {
				t.Fatalf("%d values, want %d", len(xs), tt.n)
			}
			if e := relErr(Mean(xs), tt.mean); e > tt.tolM {
				t.Errorf("mean = %.15g, certified %.15g (relative error %.2g)", Mean(xs), tt.mean, e)
			}
			if e := relErr(StdDev(xs), tt.sd); e > tt.tolSD {
				t.Errorf("sd = %.15g, certified %.15g (relative error %.2g)", StdDev(xs), tt.sd, e)
			}
		})
	}
}

func TestNISTANOVA(t *testing.T) {
	tests := []struct {
		file               string
		dfb, dfw           int
		ssb, ssw, msb, msw float64
		f, r2              float64
		tol                float64 // relative
	}{
		{"SiRstv.dat", 4, 20, 5.11462616000000e-02, 2.16636560000000e-01, 1.27865654000000e-02, 1.08318280000000e-02,
			1.18046237440255e+00, 1.90999039051129e-01, 1e-10},
		// 7 constant leading digits: NIST expects about 9-10 correct digits
		// from a good double-precision algorithm.
		{"AtmWtAg.dat", 1, 46, 3.63834187500000e-09, 1.04951729166667e-08, 3.63834187500000e-09, 2.28155932971014e-10,
			1.59467335677930e+01, 2.57426544538321e-01, 1e-8},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r, err := ANOVA(load(t, tt.file)...)
			if err != nil {
				t.Fatal(err)
			}
			if r.DFBetween != tt.dfb || r.DFWithin != tt.dfw {
				t.Errorf("df = %d, %d; certified %d, %d", r.DFBetween, r.DFWithin, tt.dfb, tt.dfw)
			}
			for _, c := range []struct {
				name      string
				got, want float64
			}{
				{"SS between", r.SSBetween, tt.ssb}, {"SS within", r.SSWithin, tt.ssw},
				{"MS between", r.MSBetween, tt.msb}, {"MS within", r.MSWithin, tt.msw},
				{"F", r.F, tt.f}, {"R²", r.R2, tt.r2},
			} {
				if e := relErr(c.got, c.want); e > tt.tol {
					t.Errorf("%s = %.15g, certified %.15g (relative error %.2g)", c.name, c.got, c.want, e)
				}
			}
			if !(r.P > 0 && r.P < 1) {
				t.Errorf("p = %g, want in (0, 1)", r.P)
			}
			t.Logf("F = %.15g, p = %.6g", r.F, r.P)
		})
	}
}

// TestANOVAPValue checks the p-value against closed forms: with two groups
// ANOVA is the pooled t-test (F = t², same p), and for df_between = 2,
// P(F > f) = (1 + 2f/d2)^(−d2/2).
func TestANOVAPValue(t *testing.T) {
	three := [][]float64{{1, 2, 3, 4}, {2, 4, 5, 6}, {5, 7, 8, 9}}
	r, err := ANOVA(three...)
	if err != nil {
		t.Fatal(err)
	}
	d2 := float64(r.DFWithin)
	// Hand computation: group means 2.5, 4.25, 7.25; grand mean 14/3 = 4.6667.
	// SSB = 4(2.1667² + 0.4167² + 2.5833²) = 46.1667; SSW = 5 + 8.75 + 8.75 = 22.5.
	if math.Abs(r.SSBetween-46.16666666666667) > 1e-12 || math.Abs(r.SSWithin-22.5) > 1e-12 {
		t.Errorf("SS = %.15g, %.15g; want 46.1666…, 22.5", r.SSBetween, r.SSWithin)
	}
	want := math.Pow(1+2*r.F/d2, -d2/2)
	if relErr(r.P, want) > 1e-10 {
		t.Errorf("p = %.15g, closed form %.15g", r.P, want)
	}

	g := load(t, "AtmWtAg.dat")
	a, err := ANOVA(g...)
	if err != nil {
		t.Fatal(err)
	}
	// Pooled two-sample t with the same data: t² = F, and the F tail equals
	// the two-sided t tail, computed here from Welch (equal n: same t).
	w, err := Welch(g[0], g[1])
	if err != nil {
		t.Fatal(err)
	}
	if relErr(w.T*w.T, a.F) > 1e-8 {
		t.Errorf("t² = %.12g, F = %.12g; equal group sizes make them equal", w.T*w.T, a.F)
	}
}

func TestWelchSleep(t *testing.T) {
	g := load(t, "sleep.dat")
	r, err := Welch(g[0], g[1])
	if err != nil {
		t.Fatal(err)
	}
	// R: t = -1.8608, df = 17.776, p-value = 0.07939,
	// 95 % CI -3.3654832 0.2054832, means 0.75 and 2.33.
	checks := []struct {
		name      string
		got, want float64
		tol       float64 // absolute: half a unit of R's last printed digit
	}{
		{"t", r.T, -1.8608, 5e-5},
		{"df", r.DF, 17.776, 5e-4},
		{"p", r.P, 0.07939, 5e-6},
		{"CI low", r.CI95Lo, -3.3654832, 5e-8},
		{"CI high", r.CI95Hi, 0.2054832, 5e-8},
		{"mean a", r.MeanA, 0.75, 1e-15},
		{"mean b", r.MeanB, 2.33, 1e-14},
		{"diff", r.Diff, -1.58, 1e-14},
	}
	for _, c := range checks {
		if math.Abs(c.got-c.want) > c.tol {
			t.Errorf("%s = %.10g, R says %.10g", c.name, c.got, c.want)
		}
	}
	// Symmetric: swapping the samples flips t and the interval.
	s, _ := Welch(g[1], g[0])
	if math.Abs(s.T+r.T) > 1e-12 || math.Abs(s.P-r.P) > 1e-12 || math.Abs(s.CI95Lo+r.CI95Hi) > 1e-12 {
		t.Errorf("swapped: %+v vs %+v", s, r)
	}
}

func TestMeanCISleep(t *testing.T) {
	g := load(t, "sleep.dat")[0]
	lo, hi, err := MeanCI(g, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	// R: t.test(sleep$extra[1:10]): -0.5297804 2.0297804.
	if math.Abs(lo+0.5297804) > 5e-8 || math.Abs(hi-2.0297804) > 5e-8 {
		t.Errorf("95 %% CI = [%.8f, %.8f], R says [-0.5297804, 2.0297804]", lo, hi)
	}
	s := Summarize(g)
	want := Summary{N: 10, Mean: 0.75, Min: -1.6, P50: 0.35, Max: 3.7, CI95Lo: lo, CI95Hi: hi}
	if s.N != want.N || math.Abs(s.Mean-want.Mean) > 1e-15 || s.Min != want.Min || math.Abs(s.P50-want.P50) > 1e-15 || s.Max != want.Max {
		t.Errorf("Summarize = %+v, want %+v", s, want)
	}
	// R: sd 1.78901 (sd(y) printed to 6 digits).
	if math.Abs(s.StdDev-1.78901) > 5e-6 {
		t.Errorf("sd = %g, R says 1.78901", s.StdDev)
	}
	// R's summary (type 7): 1st Qu. -0.175, 3rd Qu. 1.700.
	if q1, q3 := Percentile(g, 25), Percentile(g, 75); math.Abs(q1+0.175) > 1e-12 || math.Abs(q3-1.7) > 1e-12 {
		t.Errorf("quartiles = %g, %g; R says -0.175, 1.7", q1, q3)
	}
	if _, _, err := MeanCI(g, 1.5); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("level 1.5: err = %v", err)
	}
}

func TestPercentile(t *testing.T) {
	ten := []float64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1} // unsorted on purpose
	tests := []struct {
		name string
		xs   []float64
		p    float64
		want float64
	}{
		// h = (n−1)p/100: 9 × 0.95 = 8.55 -> 9 + 0.55 × (10 − 9).
		{"p95 of 1..10", ten, 95, 9.55},
		{"p99 of 1..10", ten, 99, 9.91},
		{"p50 of 1..10", ten, 50, 5.5},
		{"p0", ten, 0, 1},
		{"p100", ten, 100, 10},
		{"one value", []float64{7}, 99, 7},
		{"p50 of odd count", []float64{3, 1, 2}, 50, 2},
		// NumPy's documented example: np.percentile([[10, 7, 4], [3, 2, 1]], 50) = 3.5.
		{"numpy doc example", []float64{10, 7, 4, 3, 2, 1}, 50, 3.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := append([]float64(nil), tt.xs...)
			if got := Percentile(tt.xs, tt.p); math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("Percentile(%v, %g) = %.15g, want %g", tt.xs, tt.p, got, tt.want)
			}
			for i := range orig {
				if orig[i] != tt.xs[i] {
					t.Fatal("input modified")
				}
			}
		})
	}
	for _, p := range []float64{-1, 101, math.NaN()} {
		if !math.IsNaN(Percentile(ten, p)) {
			t.Errorf("Percentile(p=%g) should be NaN", p)
		}
	}
	if !math.IsNaN(Median(nil)) || !math.IsNaN(Mean(nil)) || !math.IsNaN(StdDev([]float64{1})) {
		t.Error("empty or single-value statistics should be NaN")
	}
}

func TestSummarizeSmall(t *testing.T) {
	s := Summarize(nil)
	if s.N != 0 || !math.IsNaN(s.Mean) || !math.IsNaN(s.P99) || !math.IsNaN(s.CI95Lo) || !math.IsNaN(s.Min) {
		t.Errorf("Summarize(nil) = %+v, want NaNs", s)
	}
	if Finite(s.Mean) != 0 || Finite(math.Inf(1)) != 0 || Finite(2.5) != 2.5 {
		t.Error("Finite")
	}
	one := Summarize([]float64{4})
	if one.Mean != 4 || one.P95 != 4 || !math.IsNaN(one.StdDev) || !math.IsNaN(one.CI95Hi) {
		t.Errorf("Summarize([4]) = %+v", one)
	}
}

func TestTestsRejectTooLittleData(t *testing.T) {
	tests := []struct {
		name string
		run  func() error
	}{
		{"welch, one value", func() error { _, err := Welch([]float64{1}, []float64{1, 2}); return err }},
		{"welch, constant", func() error { _, err := Welch([]float64{1, 1}, []float64{1, 1}); return err }},
		{"anova, one group", func() error { _, err := ANOVA([]float64{1, 2}); return err }},
		{"anova, empty group", func() error { _, err := ANOVA([]float64{1, 2}, nil); return err }},
		{"anova, no df within", func() error { _, err := ANOVA([]float64{1}, []float64{2}); return err }},
		{"anova, all equal", func() error { _, err := ANOVA([]float64{1, 1}, []float64{1, 1}); return err }},
		{"mean CI, one value", func() error { _, _, err := MeanCI([]float64{1}, 0.95); return err }},
	}
	for _, tt := range tests {
		if err := tt.run(); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tt.name, err)
		}
	}
	r, err := ANOVA([]float64{1, 1}, []float64{2, 2})
	if err != nil || !math.IsInf(r.F, 1) || r.P != 0 {
		t.Errorf("constant groups with different means: %+v, %v; want F = +Inf, p = 0", r, err)
	}
}

func TestECDF(t *testing.T) {
	tests := []struct {
		name string
		xs   []float64
		want []Point
	}{
		{"empty", nil, nil},
		{"distinct", []float64{3, 1, 2, 4}, []Point{{1, 0.25}, {2, 0.5}, {3, 0.75}, {4, 1}}},
		{"ties", []float64{2, 1, 2, 2, 5}, []Point{{1, 0.2}, {2, 0.8}, {5, 1}}},
		{"NaN left out", []float64{math.NaN(), 1, 3}, []Point{{1, 0.5}, {3, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ECDF(tt.xs)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i].X != tt.want[i].X || math.Abs(got[i].P-tt.want[i].P) > 1e-15 {
					t.Errorf("point %d = %v, want %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}
