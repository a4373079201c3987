// Package stats holds the statistics of wisp's experiment reports (seed 000's
// analysis step): summaries of latency and energy samples (mean, median,
// p50/p95/p99, standard deviation, the 95 % confidence interval of the
// mean), Welch's t-test between two execution modes, one-way ANOVA across
// modes, and empirical CDFs for plots.
//
// Conventions:
//   - Percentiles interpolate linearly between order statistics, Hyndman and
//     Fan's type 7 (R's default quantile, NumPy's default percentile, Excel's
//     PERCENTILE.INC): with the sorted sample x[0..n-1] and h = (n−1)·p/100,
//     the p-th percentile is x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋]).
//   - Variance and standard deviation are the sample ones (divisor n−1),
//     computed with the corrected two-pass algorithm so that data with many
//     constant leading digits (NIST StRD NumAcc, AtmWtAg) keep their accuracy.
//   - Confidence intervals and p-values use Student's t and Fisher's F
//     distributions from gonum.org/v1/gonum/stat/distuv.
//   - Descriptive functions return NaN for an empty sample; tests return an
//     error wrapping errdefs.ErrInvalid when the sample is too small.
//
// The tests check every figure against published reference values: NIST
// StRD's certified results (Michelso, NumAcc4, SiRstv, AtmWtAg) and R's
// t.test on Student's sleep data; see testdata/README.md.
package stats

import (
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/wisp-faas/wisp/internal/errdefs"
)

// Mean is the arithmetic mean, NaN for no data. A second pass corrects the
// rounding of the first.
func Mean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	m := s / float64(len(xs))
	var c float64
	for _, x := range xs {
		c += x - m
	}
	return m + c/float64(len(xs))
}

// Variance is the sample variance (divisor n−1), NaN for fewer than two
// values.
func Variance(xs []float64) float64 {
	n := len(xs)
	if n < 2 {
		return math.NaN()
	}
	m := Mean(xs)
	var ss, c float64
	for _, x := range xs {
		d := x - m
		ss += d * d
		c += d
	}
	return (ss - c*c/float64(n)) / float64(n-1)
}

// StdDev is the sample standard deviation, NaN for fewer than two values.
func StdDev(xs []float64) float64 { return math.Sqrt(Variance(xs)) }

// Percentile returns the p-th percentile (0 ≤ p ≤ 100) by linear
// interpolation (type 7; see the package doc), NaN for no data or p out of
// range. xs is not modified.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 || !(p >= 0 && p <= 100) {
		return math.NaN()
	}
	return percentileSorted(sortedCopy(xs), p)
}

func sortedCopy(xs []float64) []float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s
}

func percentileSorted(s []float64, p float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	h := float64(len(s)-1) * p / 100
	lo := math.Floor(h)
	i := int(lo)
	if i >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[i] + (h-lo)*(s[i+1]-s[i])
}

// Median is the 50th percentile.
func Median(xs []float64) float64 { return Percentile(xs, 50) }

// MeanCI returns the two-sided confidence interval of the mean at level
// (0.95 for 95 %): mean ± t(1−(1−level)/2, n−1) · s/√n.
func MeanCI(xs []float64, level float64) (lo, hi float64, err error) {
	n := len(xs)
	if n < 2 {
		return math.NaN(), math.NaN(), fmt.Errorf("confidence interval of the mean: %d values, need at least 2: %w", n, errdefs.ErrInvalid)
	}
	if !(level > 0 && level < 1) {
		return math.NaN(), math.NaN(), fmt.Errorf("confidence interval of the mean: level %g outside (0, 1): %w", level, errdefs.ErrInvalid)
	}
	m := Mean(xs)
	half := tQuantile(1-(1-level)/2, float64(n-1)) * StdDev(xs) / math.Sqrt(float64(n))
	return m - half, m + half, nil
}

func tQuantile(p, df float64) float64 {
	return distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}.Quantile(p)
}

// Summary describes one sample. Fields that need more data than there is
// are NaN (JSON encoders need them replaced; see Finite).
type Summary struct {
	N      int     `json:"n"`
	Mean   float64 `json:"mean"`
	StdDev float64 `json:"stddev"`
	Min    float64 `json:"min"`
	P50    float64 `json:"p50"` // the median
	P95    float64 `json:"p95"`
	P99    float64 `json:"p99"`
	Max    float64 `json:"max"`
	CI95Lo float64 `json:"ci95_lo"` // 95 % confidence interval of the mean
	CI95Hi float64 `json:"ci95_hi"`
}

// Summarize computes a Summary of xs.
func Summarize(xs []float64) Summary {
	s := sortedCopy(xs)
	out := Summary{N: len(xs), Mean: Mean(xs), StdDev: StdDev(xs),
		Min: math.NaN(), Max: math.NaN(),
		P50: percentileSorted(s, 50), P95: percentileSorted(s, 95), P99: percentileSorted(s, 99)}
	if len(s) > 0 {
		out.Min, out.Max = s[0], s[len(s)-1]
	}
	out.CI95Lo, out.CI95Hi, _ = MeanCI(xs, 0.95)
	return out
}

// Finite returns v, or 0 when v is NaN or infinite: for JSON, which has
// neither.
func Finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// TTest is the result of Welch's two-sample t-test.
type TTest struct {
	MeanA float64 `json:"mean_a"`
	MeanB float64 `json:"mean_b"`
	Diff  float64 `json:"diff"` // MeanA − MeanB
	T     float64 `json:"t"`
	// DF is the Welch–Satterthwaite degrees of freedom (not an integer).
	DF float64 `json:"df"`
	// P is the two-sided p-value.
	P float64 `json:"p"`
	// CI95Lo and CI95Hi bound the difference of the means at 95 %.
	CI95Lo float64 `json:"ci95_lo"`
	CI95Hi float64 `json:"ci95_hi"`
}

// Welch tests whether two samples have the same mean without assuming equal
// variances: t = (m_a − m_b) / √(s_a²/n_a + s_b²/n_b), with
// df = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a−1) + (s_b²/n_b)²/(n_b−1)).
func Welch(a, b []float64) (TTest, error) {
	if len(a) < 2 || len(b) < 2 {
		return TTest{}, fmt.Errorf("welch t-test: samples of %d and %d values, need at least 2 each: %w", len(a), len(b), errdefs.ErrInvalid)
	}
	na, nb := float64(len(a)), float64(len(b))
	va, vb := Variance(a)/na, Variance(b)/nb
	r := TTest{MeanA: Mean(a), MeanB: Mean(b)}
	r.Diff = r.MeanA - r.MeanB
	se2 := va + vb
	if se2 == 0 {
		return r, fmt.Errorf("welch t-test: both samples are constant, the test is undefined: %w", errdefs.ErrInvalid)
	}
	se := math.Sqrt(se2)
	r.T = r.Diff / se
	r.DF = se2 * se2 / (va*va/(na-1) + vb*vb/(nb-1))
	r.P = 2 * distuv.StudentsT{Mu: 0, Sigma: 1, Nu: r.DF}.Survival(math.Abs(r.T))
	half := tQuantile(0.975, r.DF) * se
	r.CI95Lo, r.CI95Hi = r.Diff-half, r.Diff+half
	return r, nil
}

// ANOVAResult is a one-way analysis of variance.
type ANOVAResult struct {
	DFBetween int     `json:"df_between"` // groups − 1
	DFWithin  int     `json:"df_within"`  // observations − groups
	SSBetween float64 `json:"ss_between"`
	SSWithin  float64 `json:"ss_within"`
	MSBetween float64 `json:"ms_between"`
	MSWithin  float64 `json:"ms_within"`
	F         float64 `json:"f"`
	P         float64 `json:"p"`  // P(F(df_between, df_within) > F)
	R2        float64 `json:"r2"` // SS between / SS total
}

// ANOVA tests whether k ≥ 2 groups share one mean. Sums of squares are taken
// about the group means and the grand mean (two-pass), as NIST StRD's
// certified values require. When every group is constant and the means
// differ, F is +Inf and P is 0.
func ANOVA(groups ...[]float64) (ANOVAResult, error) {
	k := len(groups)
	if k < 2 {
		return ANOVAResult{}, fmt.Errorf("anova: %d groups, need at least 2: %w", k, errdefs.ErrInvalid)
	}
	var all []float64
	for i, g := range groups {
		if len(g) == 0 {
			return ANOVAResult{}, fmt.Errorf("anova: group %d is empty: %w", i, errdefs.ErrInvalid)
		}
		all = append(all, g...)
	}
	n := len(all)
	if n <= k {
		return ANOVAResult{}, fmt.Errorf("anova: %d observations in %d groups leave no degree of freedom within groups: %w", n, k, errdefs.ErrInvalid)
	}
	grand := Mean(all)
	r := ANOVAResult{DFBetween: k - 1, DFWithin: n - k}
	for _, g := range groups {
		m := Mean(g)
		d := m - grand
		r.SSBetween += float64(len(g)) * d * d
		for _, x := range g {
			e := x - m
			r.SSWithin += e * e
		}
	}
	r.MSBetween = r.SSBetween / float64(r.DFBetween)
	r.MSWithin = r.SSWithin / float64(r.DFWithin)
	if tot := r.SSBetween + r.SSWithin; tot > 0 {
		r.R2 = r.SSBetween / tot
	}
	switch {
	case r.MSWithin > 0:
		r.F = r.MSBetween / r.MSWithin
		r.P = distuv.F{D1: float64(r.DFBetween), D2: float64(r.DFWithin)}.Survival(r.F)
	case r.MSBetween > 0:
		r.F, r.P = math.Inf(1), 0
	default:
		return r, fmt.Errorf("anova: every observation is equal, the test is undefined: %w", errdefs.ErrInvalid)
	}
	return r, nil
}

// Point is one step of an empirical CDF: P of the sample is ≤ X.
type Point struct {
	X float64 `json:"x"`
	P float64 `json:"p"`
}

// ECDF returns the empirical CDF of xs: one point per distinct value, in
// increasing order, with the fraction of the sample at or below it. Plot it
// as a step function. NaNs are left out.
func ECDF(xs []float64) []Point {
	s := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	slices.Sort(s)
	n := float64(len(s))
	var out []Point
	for i, x := range s {
		if i+1 < len(s) && s[i+1] == x {
			continue // the last of equal values carries their whole step
		}
		out = append(out, Point{X: x, P: float64(i+1) / n})
	}
	return out
}
