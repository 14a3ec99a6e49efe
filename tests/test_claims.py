"""Verdict rules: each threshold tested on both sides, and every verdict says what it found."""
import math

import numpy as np
import pytest

from lsi import claims
from lsi.book import verdicts
from lsi.stats import bootstrap_interval


def test_verdict_requires_a_detail_unless_yes():
    assert str(claims.Verdict("yes")) == "yes"
    assert str(claims.Verdict("no", "found less")) == "no: found less"
    with pytest.raises(ValueError, match="must say what was found"):
        claims.Verdict("partly")
    with pytest.raises(ValueError, match="not a verdict"):
        claims.Verdict("maybe", "x")
    assert str(claims.Verdict("cannot tell", "the networks have not converged")) == \
        "cannot tell: the networks have not converged"
    with pytest.raises(ValueError, match="must say what was found"):
        claims.Verdict("cannot tell")


def test_long_tail_boundary_is_the_exponential():
    assert math.isclose(claims.EXPONENTIAL_TOP10_SHARE, 0.1 * (1 + math.log(10)))
    rng = np.random.default_rng(0)
    heavy = rng.lognormal(0, 2.0, 20000)
    assert claims.long_tail(heavy).status == "yes"
    flat = rng.uniform(1, 2, 20000)
    verdict = claims.long_tail(flat)
    assert verdict.status == "no" and "exponential" in verdict.detail
    assert claims.long_tail(rng.lognormal(0, 1.0, 20000)).status == "yes"
    # a gamma(2) distribution is lighter-tailed than the exponential
    assert claims.long_tail(rng.gamma(2.0, 1.0, 20000)).status == "no"


def test_long_tail_partly_when_one_measure_passes():
    # 2% of the values ten times the rest: p99/median = 10 (> 6.64), top-10% share 24% (< 33%)
    values = np.concatenate([np.ones(9800), np.full(200, 10.0)])
    verdict = claims.long_tail(values)
    assert verdict.status == "partly" and "24%" in verdict.detail


@pytest.mark.parametrize("shift, expected", [(3.0, "yes"), (0.6, "partly"), (0.0, "no"), (-3.0, "no")])
def test_separates_on_both_sides_of_the_auroc_thresholds(shift, expected):
    rng = np.random.default_rng(1)
    positive = np.zeros(2000, bool)
    positive[:200] = True
    scores = rng.normal(size=2000) + shift * positive
    assert claims.separates(scores, positive, what="flips").status == expected


def test_separates_above_all_needs_a_positive_above_every_negative():
    scores = np.r_[np.linspace(0, 1, 100), np.linspace(0.85, 0.99, 20)]
    positive = np.r_[np.zeros(100, bool), np.ones(20, bool)]
    assert claims.separates(scores, positive, above_all=False).status == "yes"
    verdict = claims.separates(scores, positive, above_all=True)
    assert verdict.status == "partly" and "none is above" in verdict.detail


def test_ordered_names_the_inverted_pair():
    rng = np.random.default_rng(2)
    low, mid, high = rng.normal(0, 1, 500), rng.normal(5, 1, 500), rng.normal(10, 1, 500)
    assert claims.ordered({"clean": low, "lorem": mid, "flipped": high}).status == "yes"
    verdict = claims.ordered({"the clean reviews": mid, "lorem ipsum": low, "flipped": high})
    assert verdict.status == "no" and "the median of lorem ipsum is below that of the clean reviews" in verdict.detail
    close = claims.ordered({"a": rng.normal(0, 1, 30), "b": rng.normal(0.05, 1, 30) + 0.05})
    assert close.status in ("partly", "no")
    if close.status == "partly":
        assert "overlap" in close.detail


@pytest.mark.parametrize("measured, expected", [(10.0, "yes"), (6.7, "yes"), (14.9, "yes"), (6.6, "partly"),
                                                (15.1, "partly"), (1.2, "partly"), (1.0, "no"), (0.5, "no")])
def test_ratio_near_on_both_sides_of_the_tolerance(measured, expected):
    assert claims.ratio_near(measured, 10.0).status == expected


@pytest.mark.parametrize("measured, expected", [(1.49, "yes"), (0.67, "yes"), (1.51, "no"), (0.66, "no")])
def test_ratio_near_one_means_alike(measured, expected):
    verdict = claims.ratio_near(measured, 1.0, what="the ratio")
    assert verdict.status == expected and "other way" not in verdict.detail


def test_ratio_near_rejects_non_positive():
    with pytest.raises(ValueError):
        claims.ratio_near(-1.0, 10.0)


@pytest.mark.parametrize("rho, strong, weak, differ", [
    (0.95, "yes", "no", "no"), (0.9, "yes", "no", "no"), (0.89, "partly", "no", "partly"),
    (0.7, "partly", "no", "partly"), (0.69, "no", "partly", "yes"), (0.29, "no", "yes", "yes"),
    (-0.31, "no", "partly", "yes")])
def test_correlation_rules_at_their_thresholds(rho, strong, weak, differ):
    assert claims.correlates(rho).status == strong
    assert claims.weakly_correlated(rho).status == weak
    assert claims.differ(rho).status == differ


@pytest.mark.parametrize("rho, err, expected", [(0.95, 0.05, "yes"), (0.95, 0.56, "partly"),
                                                (0.84, 0.05, "partly"), (0.839, 1.76, "no"),
                                                (0.9, 0.1, "yes")])
def test_approximates_judges_ranking_and_values(rho, err, expected):
    verdict = claims.approximates(rho, err)
    assert verdict.status == expected
    if expected == "no":
        assert "176%" in verdict.detail


def test_exceeds_uses_the_noise_of_repeats():
    assert claims.exceeds([0.80, 0.81, 0.82], [0.70, 0.71, 0.72], what_a="a", what_b="b").status == "yes"
    assert claims.exceeds([0.70, 0.80, 0.75], [0.72, 0.74, 0.70], what_a="a", what_b="b").status == "partly"
    verdict = claims.exceeds([0.6, 0.62], [0.7, 0.71], what_a="lowest first", what_b="random")
    assert verdict.status == "no" and "lowest first is not above random" in verdict.detail


def test_best_compares_the_group_with_every_other():
    test = {"low": [0.60, 0.61, 0.62], "mid": [0.70, 0.71, 0.72], "high": [0.50, 0.52, 0.51]}
    assert claims.best(test, "mid", what="test accuracy").status == "yes"
    close = claims.best({**test, "high": [0.69, 0.73, 0.70]}, "mid", what="test accuracy")
    assert close.status == "partly" and "high (0.707)" in close.detail and "low" not in close.detail
    beaten = claims.best(test, "low", what="test accuracy")
    assert beaten.status == "no" and beaten.detail.endswith(": mid 0.71 vs low 0.61")
    gaps = {"low": [0.30, 0.31, 0.32], "mid": [0.05, 0.06, 0.04], "high": [0.10, 0.12, 0.11]}
    assert claims.best(gaps, "mid", lower=True, what="gap").status == "yes"
    assert "lowest mean gap" in claims.best(gaps, "low", lower=True, what="gap").detail
    assert claims.best({"a": [1.0, 1.1], "b": [1.1, 1.0]}, "a").status == "no"  # a tie is not a win
    with pytest.raises(ValueError, match="among at least two groups"):
        claims.best({"mid": [1.0]}, "mid")


def test_more_concentrated_on_both_sides():
    rng = np.random.default_rng(4)
    narrow, wide = rng.lognormal(0, 0.2, 400), rng.lognormal(0, 1.0, 400)
    assert claims.more_concentrated(narrow, wide, what_a="lorem", what_b="reviews").status == "yes"
    verdict = claims.more_concentrated(wide, narrow, what_a="lorem", what_b="reviews")
    assert verdict.status == "no" and "not more concentrated" in verdict.detail
    similar = claims.more_concentrated(rng.lognormal(0, 0.99, 50), rng.lognormal(0, 1.0, 50),
                                       what_a="a", what_b="b")
    assert similar.status in ("partly", "no")


def test_bootstrap_interval_covers_the_median_and_is_seeded():
    values = np.random.default_rng(3).normal(size=1000)
    low, high = bootstrap_interval(values)
    assert low < np.median(values) < high
    assert (low, high) == bootstrap_interval(values)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_box_and_summary_carry_the_verdicts():
    rows = [claims.Claim("LSI is long-tailed.", "p99/median 12", claims.Verdict("yes", rule="long_tail"),
                         tier="converged"),
            claims.Claim("Lorem sits between.", "medians ...",
                         claims.Verdict("no", "lorem ipsum sits below the clean reviews", rule="ordered"))]
    html = verdicts.box(rows).data
    assert "converged" in html and "lorem ipsum sits below the clean reviews" in html and "ordered" in html
    text = verdicts.summary(rows, facts=["Accuracy 0.9."]).data
    assert "1 reproduced, 0 partly, 1 not, 0 cannot tell." in text
    assert "**no: lorem ipsum sits below the clean reviews**" in text and "Accuracy 0.9." in text


@pytest.mark.parametrize("near,mid,far,expected", [
    (3.0, 1.1, 0.3, "yes"),                               # both ends outside the factor, middle inside
    (1.9, 1.1, 0.3, "partly"),                            # near end just inside 2x
    (2.1, 1.1, float("nan"), "yes"),                      # just outside, and an unusable estimate
    (1.5, 2.5, 0.6, "no"),                                # both ends within 2x
    (3.0, 2.5, 0.3, "partly"),                            # also broken in the middle
    (-0.2, 0.9, 0.49, "yes"),                             # a negative estimate is broken
])
def test_breaks_down_on_both_sides_of_the_factor(near, mid, far, expected):
    verdict = claims.breaks_down({"near": near, "middle": mid, "far": far}, at=["near", "far"])
    assert verdict.status == expected and verdict.rule == "breaks_down"
    assert claims.BREAKDOWN_FACTOR == 2.0
    with pytest.raises(ValueError, match="no measured ratio"):
        claims.breaks_down({"near": 1.0}, at=["far"])


@pytest.mark.parametrize("centre, expected", [(0.05, "yes"), (0.005, "partly"), (-0.005, "no"), (-0.05, "no")])
def test_beats_on_both_sides_of_zero(centre, expected):
    draws = centre + 0.01 * np.random.default_rng(0).standard_normal(1000)  # interval about +-0.02
    verdict = claims.beats(draws, what_a="LSI", what_b="loss")
    assert verdict.status == expected and verdict.rule == "beats"
    if centre == -0.05:
        assert "behind beyond the noise" in verdict.detail
    with pytest.raises(ValueError):
        claims.beats([0.1], what_a="a", what_b="b")


def test_summary_names_whose_claims_and_no_verdict_reads_well():
    rows = [claims.Claim("c", "o", claims.Verdict(claims.YES))]
    assert "Of the paper's 1 claims" in verdicts.summary(rows).data
    assert "Of these 1 claims" in verdicts.summary(rows, whose="these").data
    flat = claims.separates([1.0, 1.0, 1.0, 1.0], [True, False, True, False], what="flips")
    assert "about as high as the rest" in flat.detail


@pytest.mark.parametrize("after_warmup, expected", [
    ([0.95, 0.91, 0.99], "yes"),          # every snapshot after the first tenth at or above 0.9
    ([0.95, 0.89, 0.99], "partly"),       # one just below 0.9, all above 0.7
    ([0.95, 0.69, 0.99], "no"),           # one below 0.7
])
def test_settles_judges_only_the_snapshots_after_the_warmup(after_warmup, expected):
    rhos = {10: 0.1, 100: 0.2, **dict(zip([250, 500, 1000], after_warmup))}  # 10 and 100 are the warm-up
    verdict = claims.settles(rhos)
    assert verdict.status == expected and verdict.rule == "settles"
    assert claims.WARMUP_FRACTION == 0.1
    assert claims.settles({1: 0.1, 11: 0.95}).status == "yes"  # 1.1 is the warm-up's end
    for bad in ({}, {0: 0.5, 10: 0.9}):
        with pytest.raises(ValueError, match="steps >= 1"):
            claims.settles(bad)


# --- cannot tell: every precondition on both sides ---------------------------------------------------------------

@pytest.mark.parametrize("norms, holds", [(1e-5, True), ([1e-7, 9.9e-6], True), ([1e-7, 1.1e-5], False),
                                          (0.287, False), ([1e-8, float("nan")], False)])
def test_converged_at_the_stated_tolerance(norms, holds):
    found = claims.converged(norms, what="the CNNs")
    assert found.holds == holds
    if not holds:
        assert "the CNNs have not converged" in found.why and "1e-05" in found.why
    assert claims.converged(4.96, tol=5.0).holds and not claims.converged(4.96, tol=4.9).holds


def test_a_failed_convergence_gives_cannot_tell_never_no():
    stuck = claims.converged([0.287, 4.96], what="the CNNs")
    verdict = claims.correlates(0.175, requires=[stuck])
    assert verdict.status == "cannot tell" and "largest gradient norm 4.96" in verdict.detail
    assert verdict.rule == "correlates"
    assert claims.correlates(0.175, requires=[claims.converged(1e-9)]).status == "no"
    for rule, args in [(claims.ratio_near, (0.5, 10.0)), (claims.differ, (0.95,)),
                       (claims.separates, ([0.1, 0.2, 0.3], [True, False, False]))]:
        assert rule(*args, requires=[stuck]).status == "cannot tell"


def test_determined_sets_the_distance_bound_against_the_displacement():
    """The quarter-width CNN of issue 25: mu = 1.8e-6, gradient norm 1e-6, displacement 0.46 is not determined;
    a well-conditioned optimum (mu = 0.01) with the same numbers is."""
    flat = claims.determined([1e-6, 5e-7], 1.8e-6, [0.46, 0.19], what="the left-out CNNs")
    assert not flat.holds and "the left-out CNNs are not determined" in flat.why and "1.8e-06" in flat.why
    assert claims.determined([1e-6, 5e-7], 1e-2, [0.46, 0.19]).holds      # bounds 1e-4 and 5e-5: under 1%
    edge = 0.01 * 0.46 * 1e-2                                            # exactly 1% of the displacement
    assert claims.determined(edge, 1e-2, 0.46).holds and not claims.determined(edge * 1.01, 1e-2, 0.46).holds
    saddle = claims.determined(1e-7, -1.05e-7, 0.1)
    assert not saddle.holds and "not a minimum" in saddle.why
    assert not claims.determined(1e-7, float("nan"), 0.1).holds
    assert claims.correlates(0.95, requires=[flat]).status == "cannot tell"
    with pytest.raises(ValueError, match="one displacement per gradient norm"):
        claims.determined([1e-6, 1e-6], 1e-2, [0.1])


def test_minimum_and_all_of_on_both_sides():
    assert claims.minimum(1.8e-6).holds
    saddle = claims.minimum(-1.05e-7, what="the full-data CNN")
    assert not saddle.holds
    assert saddle.why == "the full-data CNN is not a minimum: the Hessian's smallest eigenvalue is -1.05e-07"
    assert not claims.minimum(0.0).holds and not claims.minimum(float("nan")).holds
    assert claims.all_of(claims.minimum(1.0), claims.converged(1e-7, tol=1e-6)).holds and claims.all_of().holds
    both = claims.all_of(saddle, claims.minimum(1.0), claims.converged(0.3, tol=1e-6))
    assert not both.holds and both.why == f"{saddle.why}; " + claims.converged(0.3, tol=1e-6).why


def test_independent_replicates_on_both_sides():
    same = claims.independent([[0.1, 0.2], [0.1, 0.2], [0.1, 0.2]], what="probe seeds")
    assert not same.holds and "3 probe seeds are identical" in same.why
    assert not claims.independent([0.5]).holds
    assert claims.independent([[0.1, 0.2], [0.1, 0.2001]]).holds
    verdict = claims.exceeds([0.8, 0.9], [0.7, 0.75], what_a="a", what_b="b", requires=[same])
    assert verdict.status == "cannot tell"


def test_exceeds_cannot_tell_on_one_or_identical_repeats():
    one = claims.exceeds([0.6], [0.7], what_a="lowest first", what_b="random")
    assert one.status == "cannot tell" and "one measurement each" in one.detail
    # one deterministic measurement against varying repeats is judged
    assert claims.exceeds([0.6], [0.70, 0.72, 0.74], what_a="a", what_b="b").status == "no"
    assert claims.exceeds([0.9], [0.70, 0.72, 0.74], what_a="a", what_b="b").status == "yes"
    identical = claims.exceeds([0.8, 0.8, 0.8], [0.7, 0.7, 0.7], what_a="a", what_b="b")
    assert identical.status == "cannot tell" and "identical" in identical.detail
    # one side identical, the other varying: the noise is seen, the verdict stands
    assert claims.exceeds([0.8, 0.8, 0.8], [0.70, 0.71, 0.72], what_a="a", what_b="b").status == "yes"
    assert claims.best({"a": [1.0, 1.0], "b": [0.5, 0.5]}, "a").status == "cannot tell"


def test_enough_points_for_a_correlation_on_both_sides():
    rng = np.random.default_rng(5)
    x = rng.normal(size=10)
    ten = claims.spearman(x, x + 0.01 * rng.normal(size=10))
    assert ten.n == 10 and claims.correlates(ten).status == "yes"
    nine = claims.spearman(x[:9], x[:9] + 0.01 * rng.normal(size=9))
    verdict = claims.correlates(nine, what="a and b")
    assert verdict.status == "cannot tell" and "9 points, fewer than the 10 needed" in verdict.detail
    assert claims.enough_points(3, 3).holds and not claims.enough_points(2, 3).holds


def test_an_interval_of_zero_width_cannot_tell():
    assert claims.has_width(0.1, 0.2).holds
    flat = claims.has_width(0.5, 0.5, what="the interval")
    assert not flat.holds and "zero width" in flat.why
    frozen = claims.Correlation(0.95, 0.95, 0.95, 400)
    assert claims.correlates(frozen).status == "cannot tell"
    assert claims.correlates(claims.Correlation(0.95, 0.93, 0.97, 400)).status == "yes"
    assert claims.beats(np.full(100, 0.02), what_a="a", what_b="b").status == "cannot tell"
    one_value = claims.ordered({"low": [1.0], "high": [2.0, 3.0, 4.0]})
    assert one_value.status == "cannot tell"


def test_spearman_interval_covers_a_monte_carlo_truth():
    """The bootstrap interval of 300 pairs covers the Spearman of a million pairs of the same distribution."""
    rng = np.random.default_rng(6)
    def draw(n):
        x = rng.normal(size=n)
        return x, x + rng.normal(size=n)
    from scipy.stats import spearmanr
    truth = spearmanr(*draw(1_000_000)).statistic
    found = claims.spearman(*draw(300))
    assert found.low < truth < found.high and found.high - found.low < 0.15
    assert "95% interval" in str(found)
    with pytest.raises(ValueError, match="same length"):
        claims.spearman([1, 2, 3], [1, 2])


def test_correlation_rules_report_the_interval():
    verdict = claims.correlates(claims.Correlation(0.5, 0.4, 0.6, 100), what="probe and CNN")
    assert verdict.status == "no" and "95% interval 0.400 to 0.600, n = 100" in verdict.detail


@pytest.mark.parametrize("effect, expected", [(1.0, "yes"), (0.01, "partly"), (-0.1, "no"), (-1.0, "no")])
def test_trend_on_both_sides_of_zero(effect, expected):
    rng = np.random.default_rng(7)
    levels = np.repeat([0.0, 0.1, 0.2, 0.3, 0.4], 60)
    values = np.exp(effect * 10 * levels + rng.normal(size=levels.size))
    found = claims.spearman(levels, values)
    verdict = claims.trend(levels, values, what="LSI", level="noise")
    assert verdict.status == expected and verdict.rule == "trend"
    # the verdict follows the interval: yes above 0, partly straddling with rho > 0, no with rho <= 0
    assert {"yes": found.low > 0, "partly": found.rho > 0 >= found.low, "no": found.rho <= 0}[expected]
    mirrored = claims.trend(levels, 1 / values, increasing=False)
    assert mirrored.status == expected


def test_trend_yes_where_ordered_is_only_partly():
    """A monotone rise with overlapping neighbours: ordered says partly, the trend rule yes."""
    rng = np.random.default_rng(8)
    noise = rng.normal(size=200)  # the same spread at every level: medians in order, intervals overlapping
    groups = {f"{lvl}": np.exp(0.2 * i + noise) for i, lvl in enumerate([0, 1, 2, 3, 4])}
    assert claims.ordered(groups).status == "partly"
    levels = np.repeat(np.arange(5), 200)
    assert claims.trend(levels, np.concatenate(list(groups.values()))).status == "yes"


def test_trend_needs_three_levels_and_ten_samples():
    rng = np.random.default_rng(9)
    two = claims.trend(np.repeat([0, 1], 50), rng.normal(size=100))
    assert two.status == "cannot tell" and "distinct the levels" in two.detail
    few = claims.trend([0, 1, 2, 0, 1, 2, 0, 1, 2], np.arange(9.0))
    assert few.status == "cannot tell" and "9 points" in few.detail


@pytest.mark.parametrize("slope, expected", [(-1.0, "yes"), (-0.83, "yes"), (-1.17, "yes"), (-0.71, "partly"),
                                             (-1.25, "partly"), (0.16, "no"), (0.05, "no")])
def test_scales_like_is_as_strict_as_the_ratio_rule(slope, expected):
    """-1 +- log10(1.5) = -1 +- 0.176 is 'like 1/n'; -0.71 is 5.1x per decade, not 10x."""
    n = np.array([500, 1000, 2000, 5000])
    verdict = claims.scales_like(n, 3.0 * n ** slope, -1.0, what="LSI", law="1/n")
    assert verdict.status == expected
    assert math.isclose(claims.fitted_slope(n, 3.0 * n ** slope), slope, abs_tol=1e-12)
    if expected != "yes":
        assert f"log-log slope {slope:.2f}" in verdict.detail


def test_scales_like_needs_three_sizes():
    verdict = claims.scales_like([500, 5000], [1.0, 0.1], -1.0)
    assert verdict.status == "cannot tell" and "distinct sizes" in verdict.detail


def test_summary_counts_cannot_tell_on_its_own():
    found = [claims.Verdict("yes")] * 3 + [claims.Verdict("partly", "p"), claims.Verdict("no", "n")] + \
        [claims.Verdict("cannot tell", "not converged")] * 2
    rows = [claims.Claim(f"c{i}", "o", v) for i, v in enumerate(found)]
    assert "3 reproduced, 1 partly, 1 not, 2 cannot tell." in verdicts.summary(rows).data
    html = verdicts.box(rows).data
    assert "cannot tell" in html and "not converged" in html and "#4d4d4d" in html


def test_sub_rows_are_listed_under_their_claim_and_not_counted():
    rows = [claims.Claim("Removing the least informative first beats random.", "0.74 vs 0.70",
                         claims.Verdict("yes")),
            claims.Claim("stratified removal", "0.69 vs 0.70", claims.Verdict("no", "below"), sub=True),
            claims.Claim("Another claim.", "o", claims.Verdict("cannot tell", "not converged"))]
    text = verdicts.summary(rows).data
    assert "Of the paper's 2 claims tested here, 1 reproduced, 0 partly, 0 not, 1 cannot tell." in text
    assert "\n    - *stratified removal* **no: below**" in text
    html = verdicts.box(rows).data
    assert "padding-left:2em'>&#8627; stratified removal" in html
