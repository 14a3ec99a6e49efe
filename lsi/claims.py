"""Named verdict rules: does this run reproduce the paper's claim? yes, partly, no or cannot tell.

Every chapter's claim box is built from these rules, so that one claim is
judged the same way everywhere and no chapter carries a threshold of its own.
A rule takes the run's measurements and returns a :class:`Verdict`:

- ``yes``;
- ``partly: <what differs>``;
- ``no: <what was found instead>``;
- ``cannot tell: <why>``: a precondition of the rule does not hold, so the
  measurement can carry no verdict at all.

**Preconditions.** A rule judges only measurements that can carry a verdict.
Each rule checks its own from the measurement itself (enough points for a
correlation, a slope or a bootstrap interval; replicates that are not
identical; a bootstrap interval of non-zero width), and every rule takes
``requires=``: further :class:`Precondition` s the caller measured, chiefly
:func:`converged` (the reference models are at their optimum). The checks are
:func:`converged`, :func:`determined`, :func:`minimum`,
:func:`independent`, :func:`enough_points` and :func:`has_width`; :func:`all_of`
joins several. A failed precondition gives ``cannot tell``, never ``no``.

Each threshold is a module constant with the reason for its value, fixed
before looking at any result. The rules:

============================  ===============================================================
rule                          yes when
============================  ===============================================================
:func:`long_tail`             heavier-tailed than an exponential distribution, on both
                              the top-decile share and the p99/median ratio
:func:`separates`             AUROC >= :data:`STRONG_AUROC` (and, if asked, some positives
                              above every negative)
:func:`ordered`               group medians in the expected order, with disjoint bootstrap
                              intervals between neighbours
:func:`more_concentrated`     a narrower interquartile range of log10 values than another
                              group's, beyond the bootstrap noise
:func:`ratio_near`            a measured ratio within a factor :data:`RATIO_TOLERANCE` of
                              the expected one
:func:`correlates`            Spearman >= :data:`STRONG_CORRELATION`
:func:`weakly_correlated`     abs(Spearman) < :data:`WEAK_CORRELATION`
:func:`differ`                Spearman < :data:`MODERATE_CORRELATION` (the two rank samples
                              differently)
:func:`approximates`          Spearman >= :data:`STRONG_CORRELATION` and median relative
                              error <= :data:`CLOSE_RELATIVE_ERROR`
:func:`exceeds`               one quantity above another by more than the noise of both
:func:`best`                  one group above (or below) every other group, by :func:`exceeds`
:func:`settles`               Spearman >= :data:`STRONG_CORRELATION` at every snapshot after
                              the first :data:`WARMUP_FRACTION` of the training
:func:`breaks_down`           an estimator is off by more than :data:`BREAKDOWN_FACTOR` in
                              every regime named by the claim (and not in the others)
:func:`beats`                 paired bootstrap differences of a metric (e.g. AUROC of two
                              scores on the same resamples) lie above 0
:func:`trend`                 the Spearman of level vs value, over all samples, has its
                              bootstrap interval on the claimed side of 0
:func:`scales_like`           the change per decade of a log-log slope within a factor
                              :data:`RATIO_TOLERANCE` of the expected one (as :func:`ratio_near`)
============================  ===============================================================

A correlation can be given as a plain number or as a :class:`Correlation`
(from :func:`spearman`): the latter carries its bootstrap interval and sample
count, which the rules report and check.

:class:`Claim` pairs a paper's claim with the run's numbers, the verdict and
the solver tier that produced the numbers; :func:`box` renders claims as the
chapter's claim box and :func:`summary` turns them into the chapter's
generated summary. The box also stores its claims as data (:meth:`Claim.to_dict`)
in its output's metadata under :data:`CLAIMS_METADATA`, which the book's
reproduction report reads (:mod:`lsi.book.reproduction`).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr as _spearmanr

from lsi.stats import bootstrap_interval, separation, tail_summary

YES, PARTLY, NO, CANNOT_TELL = "yes", "partly", "no", "cannot tell"
STATUSES = (YES, PARTLY, NO, CANNOT_TELL)

CLAIMS_METADATA = "lsi.claims"
"""Key of the claims, as :meth:`Claim.to_dict` records, in the metadata of a claim box's output."""

EXPONENTIAL_TOP10_SHARE = 0.1 * (1 + math.log(10))
"""Share of the total held by the top 10% of an exponential distribution (0.330).

The exponential is the usual boundary between light and heavy tails: a
distribution is called long-tailed here when its top decile holds more."""

EXPONENTIAL_P99_OVER_MEDIAN = math.log(100) / math.log(2)
"""p99 / median of an exponential distribution (6.64), the same boundary for the tail's reach."""

STRONG_AUROC = 0.8
"""AUROC from which a score is said to single out a group well (the common 'good' grade)."""

WEAK_AUROC = 0.6
"""AUROC below which a score is said not to single out a group at all."""

RATIO_TOLERANCE = 1.5
"""A measured ratio counts as 'about' the expected one within this factor either way."""

STRONG_CORRELATION = 0.9
"""Spearman from which two scores are said to rank samples alike."""

MODERATE_CORRELATION = 0.7
"""Spearman below which two scores are said to rank samples differently."""

WEAK_CORRELATION = 0.3
"""abs(Spearman) below which a correlation is called weak."""

CLOSE_RELATIVE_ERROR = 0.1
"""Median relative error up to which an approximation's values are called accurate."""

CONFIDENCE = 0.95
"""Coverage of the bootstrap intervals the rules use."""

WARMUP_FRACTION = 0.1
"""The 'initial warm-up' of a training run: its first tenth. A ranking that settles only later than
this has not settled early (App. G speaks of an initial phase)."""

BREAKDOWN_FACTOR = 2.0
"""An estimate off by more than this factor either way (or not positive) has broken down: it
no longer gives even the scale of the true value (a relative error of 100% on the high side)."""

CONVERGED_GRADIENT_NORM = 1e-5
"""Largest gradient norm of the (regularised, mean) objective at which a model counts as at its optimum.

A left-out model moves from the full-data one by about ``H^-1 g_i / n``: one sample's
loss gradient over n, of order 1e-3 for the few hundred to few thousand samples of the
book. A residual gradient a hundred times smaller moves the optimum by at most about 1%
of that shift, so the ranking of the samples is the optimum's and not the optimiser's."""

DETERMINED_FRACTION = 0.01
"""Largest distance to the exact optimum, as a fraction of how far the model moved, that a gradient norm may
leave: the 1% of :data:`CONVERGED_GRADIENT_NORM`'s argument, checked with the Hessian's smallest eigenvalue
instead of assumed (:func:`determined`)."""

MIN_CORRELATION_POINTS = 10
"""Fewest pairs a Spearman correlation is judged on. With n pairs one swapped neighbour pair
moves Spearman by 12/(n^3 - n): 0.007 at n = 10, 0.1 at n = 5, 0.5 at n = 3."""

MIN_SLOPE_POINTS = 3
"""Fewest distinct x values a slope is judged on: a line passes through any two points, so
only a third can show whether the values lie on one."""

MIN_REPLICATES = 2
"""Fewest repeated measurements whose spread stands for the noise (one has no spread)."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of a rule: ``status`` is yes, partly, no or cannot tell; ``detail`` says what differs or why."""

    status: str
    detail: str = ""
    rule: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is not a verdict; use 'yes', 'partly', 'no' or "
                             f"'cannot tell'.")
        if self.status != YES and not self.detail:
            raise ValueError(f"a {self.status!r} verdict must say what was found instead.")

    def __str__(self) -> str:
        return self.status if self.status == YES else f"{self.status}: {self.detail}"


@dataclass(frozen=True)
class Claim:
    """One row of a claim box: the paper's claim, this run's numbers, the verdict, the tier."""

    claim: str
    ours: str
    verdict: Verdict
    tier: str = ""
    """The solver tier behind the numbers (``converged``, ``newton-step``, ``gd``, ...), if any."""
    sub: bool = False
    """A sub-row of the claim above it (the same claim under a variant of the procedure): indented in
    the box and the summary, and not counted as a claim of its own."""

    def to_dict(self) -> dict:
        """The claim as plain data: ``claim``, ``ours``, ``tier``, ``sub`` and ``verdict`` (``status``, ``detail``, ``rule``)."""
        return {"claim": self.claim, "ours": self.ours, "tier": self.tier, "sub": self.sub,
                "verdict": {"status": self.verdict.status, "detail": self.verdict.detail, "rule": self.verdict.rule}}

    @classmethod
    def from_dict(cls, record: Mapping) -> Claim:
        """The claim of a :meth:`to_dict` record."""
        return cls(record["claim"], record["ours"], Verdict(**record["verdict"]), record.get("tier", ""),
                   record.get("sub", False))


def _fmt(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True)
class Precondition:
    """Whether a measurement can carry a verdict: ``holds``, and ``why`` not when it does not."""

    holds: bool
    why: str = ""

    def __post_init__(self) -> None:
        if not self.holds and not self.why:
            raise ValueError("a failed precondition must say why.")


def converged(grad_norms: float | Sequence[float], *, tol: float = CONVERGED_GRADIENT_NORM,
              what: str = "the reference models") -> Precondition:
    """Are the models behind a measurement at their optimum: largest gradient norm <= ``tol``?

    ``grad_norms`` are the gradient norms of the objective at each model's parameters (one
    or many models); ``tol`` defaults to :data:`CONVERGED_GRADIENT_NORM`. A NaN norm fails.
    """
    norms = np.atleast_1d(np.asarray(grad_norms, float))
    if norms.size == 0:
        raise ValueError("converged needs at least one gradient norm.")
    largest = float(np.max(norms)) if not np.isnan(norms).any() else math.nan
    if largest <= tol:
        return Precondition(True)
    return Precondition(False, f"{what} have not converged (largest gradient norm {largest:.3g}, "
                               f"tolerance {tol:g})")


def determined(grad_norms: float | Sequence[float], smallest_eigenvalue: float,
               displacements: float | Sequence[float], *, what: str = "the left-out models",
               fraction: float = DETERMINED_FRACTION) -> Precondition:
    """Do the gradient norms pin the models down: is each one's distance to its exact optimum small next to
    how far it moved?

    Where the objective is strongly convex with smallest Hessian eigenvalue ``mu > 0``, a point with gradient
    norm ``||g||`` lies within ``||g|| / mu`` of the optimum. :func:`converged` bounds ``||g||``, and that
    suffices only when ``mu`` is not tiny: a nearly flat direction (``mu`` far below the L2 penalty) lets a
    model with a small gradient norm sit far from its optimum. ``smallest_eigenvalue`` is the smallest
    eigenvalue of the Hessian at the full-data optimum (:func:`lsi.networks.smallest_hessian_eigenvalue`),
    ``displacements`` the distances ``||theta_-i - theta_D||`` the bounds are set against. Holds when every
    ``||g_i|| / mu <= fraction * ||theta_-i - theta_D||``; fails when ``mu <= 0`` (not a minimum).
    """
    norms = np.atleast_1d(np.asarray(grad_norms, float))
    moved = np.atleast_1d(np.asarray(displacements, float))
    if norms.shape != moved.shape or norms.size == 0:
        raise ValueError(f"determined needs one displacement per gradient norm; got {norms.size} norms and "
                         f"{moved.size} displacements.")
    if not (curvature := minimum(smallest_eigenvalue)).holds:
        return curvature
    worst = float(np.max(norms / smallest_eigenvalue / moved))
    if worst <= fraction:
        return Precondition(True)
    return Precondition(False, f"{what} are not determined by their gradient norms: the Hessian's smallest "
                               f"eigenvalue {smallest_eigenvalue:.3g} leaves each within ||g|| / "
                               f"{smallest_eigenvalue:.3g} of its optimum, up to {worst:.3g} times the distance "
                               f"it moved (allowed: {fraction:g})")


def minimum(smallest_eigenvalue: float, *, what: str = "the full-data optimum") -> Precondition:
    """Is a point whose gradient norm vanishes a minimum: is the Hessian's smallest eigenvalue positive?

    A gradient norm alone certifies saddle points as well (:func:`lsi.networks.smallest_hessian_eigenvalue`
    measures the eigenvalue); NaN fails.
    """
    if smallest_eigenvalue > 0:
        return Precondition(True)
    return Precondition(False, f"{what} is not a minimum: the Hessian's smallest eigenvalue is "
                               f"{smallest_eigenvalue:.3g}")


def all_of(*preconditions: Precondition) -> Precondition:
    """One precondition that holds when every one of ``preconditions`` does; it gives every failed one's reason."""
    failed = [p.why for p in preconditions if not p.holds]
    return Precondition(not failed, "; ".join(failed))


def independent(replicates: Sequence, *, what: str = "the replicates") -> Precondition:
    """Do repeated measurements vary at all: at least :data:`MIN_REPLICATES`, not all identical?

    ``replicates`` holds one measurement per replicate (a number or an array of the same
    shape each). Identical replicates are one measurement repeated: their spread is zero and
    says nothing about the noise.
    """
    values = [np.asarray(r, float) for r in replicates]
    if len(values) < MIN_REPLICATES:
        return Precondition(False, f"{what}: {len(values)} replicate, no spread to judge the noise by")
    if all(np.array_equal(values[0], v, equal_nan=True) for v in values[1:]):
        return Precondition(False, f"the {len(values)} {what} are identical, one measurement repeated")
    return Precondition(True)


def enough_points(n: int, needed: int, *, what: str = "the values") -> Precondition:
    """Are there at least ``needed`` points (e.g. :data:`MIN_CORRELATION_POINTS`) for a statistic?"""
    if n >= needed:
        return Precondition(True)
    return Precondition(False, f"{what}: {n} points, fewer than the {needed} needed")


def has_width(low: float, high: float, *, what: str = "the bootstrap interval") -> Precondition:
    """Does a bootstrap interval have non-zero width (otherwise the resamples all agree: no noise seen)?"""
    if high > low:
        return Precondition(True)
    return Precondition(False, f"{what} has zero width ({_fmt(low)} to {_fmt(high)}): the resamples do not vary")


def _gated(rule: Callable[..., Verdict]) -> Callable[..., Verdict]:
    """Give ``rule`` the keyword ``requires=`` (preconditions): if any fails, the verdict is cannot tell."""
    @functools.wraps(rule)
    def judged(*args, requires: Sequence[Precondition] = (), **kwargs) -> Verdict:
        failed = [p.why for p in requires if not p.holds]
        if failed:
            return Verdict(CANNOT_TELL, "; ".join(failed), rule=rule.__name__)
        return rule(*args, **kwargs)
    return judged


def _cannot_tell(rule: str, *checks: Precondition) -> Verdict | None:
    failed = [p.why for p in checks if not p.holds]
    return Verdict(CANNOT_TELL, "; ".join(failed), rule=rule) if failed else None


@dataclass(frozen=True)
class Correlation:
    """A Spearman correlation with its percentile bootstrap interval over ``n`` pairs."""

    rho: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"Spearman {self.rho:.3f} ({CONFIDENCE:.0%} interval {self.low:.3f} to {self.high:.3f}, n = {self.n})"


def spearman(a: Sequence[float], b: Sequence[float], *, n_resamples: int = 2000, seed: int = 0) -> Correlation:
    """Spearman correlation of paired values with a :data:`CONFIDENCE` bootstrap interval (pairs resampled).

    Resamples whose ranks are constant on one side (no correlation defined) are skipped.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman needs two 1-d arrays of the same length, got shapes {a.shape} and {b.shape}.")
    if a.size < 2:
        raise ValueError(f"spearman needs at least two pairs, got {a.size}.")
    rho = float(_spearmanr(a, b).statistic)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        pick = rng.integers(0, a.size, a.size)
        if np.ptp(a[pick]) > 0 and np.ptp(b[pick]) > 0:
            draws.append(_spearmanr(a[pick], b[pick]).statistic)
    tail = (1 - CONFIDENCE) / 2
    low, high = (float(np.quantile(draws, q)) for q in (tail, 1 - tail)) if draws else (rho, rho)
    return Correlation(rho, low, high, int(a.size))


def _correlation(rho: float | Correlation, rule: str) -> tuple[float, str, Verdict | None]:
    """The number, its text and the cannot-tell verdict (or None) of a plain or bootstrapped correlation."""
    if not isinstance(rho, Correlation):
        return float(rho), f"Spearman {rho:.3f}", None
    return rho.rho, str(rho), _cannot_tell(
        rule, enough_points(rho.n, MIN_CORRELATION_POINTS, what="the correlation"),
        has_width(rho.low, rho.high, what="the correlation's bootstrap interval"))


@_gated
def long_tail(values: Sequence[float]) -> Verdict:
    """Is the distribution of ``values`` long-tailed, i.e. heavier-tailed than an exponential?

    Two measures of :func:`lsi.stats.tail_summary`, each against the
    exponential distribution's value: the share of the total held by the top
    10% (:data:`EXPONENTIAL_TOP10_SHARE`) and p99/median
    (:data:`EXPONENTIAL_P99_OVER_MEDIAN`). Both above: yes; one: partly; none: no.
    """
    tail = tail_summary(values)
    share_ok = tail["top10_share"] > EXPONENTIAL_TOP10_SHARE
    reach_ok = tail["p99_over_median"] > EXPONENTIAL_P99_OVER_MEDIAN
    share = f"the top 10% hold {tail['top10_share']:.0%} of the total (exponential: {EXPONENTIAL_TOP10_SHARE:.0%})"
    reach = f"p99/median is {tail['p99_over_median']:.3g} (exponential: {EXPONENTIAL_P99_OVER_MEDIAN:.3g})"
    if share_ok and reach_ok:
        return Verdict(YES, rule="long_tail")
    if share_ok or reach_ok:
        return Verdict(PARTLY, f"{reach if share_ok else share}, no heavier than an exponential",
                       rule="long_tail")
    return Verdict(NO, f"no heavier than an exponential: {share}; {reach}", rule="long_tail")


@_gated
def separates(scores: Sequence[float], positive: Sequence[bool], *, what: str = "the positives",
              above_all: bool = False) -> Verdict:
    """Do higher scores single out ``positive`` samples (for example flipped labels)?

    yes: AUROC >= :data:`STRONG_AUROC` and, with ``above_all``, at least one
    positive above every negative. partly: AUROC >= :data:`WEAK_AUROC`, or the
    extra condition fails. no: AUROC below :data:`WEAK_AUROC`.
    """
    found = separation(scores, positive)
    auroc = found["auroc"]
    if auroc < WEAK_AUROC:
        lower = "lower than" if found["median_ratio"] < 1 else "about as high as"
        return Verdict(NO, f"{what} score {lower} the rest (AUROC {auroc:.3f}, median ratio "
                           f"{found['median_ratio']:.3g})", rule="separates")
    if auroc < STRONG_AUROC:
        return Verdict(PARTLY, f"{what} score higher, but the separation is weak (AUROC {auroc:.3f})",
                       rule="separates")
    if above_all and found["above_max_negative"] == 0:
        return Verdict(PARTLY, f"{what} score higher (AUROC {auroc:.3f}), but none is above every other "
                               f"sample", rule="separates")
    return Verdict(YES, rule="separates")


@_gated
def ordered(groups: Mapping[str, Sequence[float]], *, seed: int = 0) -> Verdict:
    """Are the groups' medians in the order given by ``groups`` (lowest first)?

    Each median gets a bootstrap interval (:func:`lsi.stats.bootstrap_interval`,
    :data:`CONFIDENCE`). yes: the medians follow the order and neighbouring
    intervals are disjoint. partly: the medians follow the order but some
    neighbouring intervals overlap. no: some pair is inverted; the detail
    names it. cannot tell: a group has fewer than :data:`MIN_REPLICATES` values or an
    interval of zero width.
    """
    if len(groups) < 2:
        raise ValueError("ordered needs at least two groups.")
    names = list(groups)
    stats = {name: (float(np.median(groups[name])),
                    bootstrap_interval(groups[name], np.median, confidence=CONFIDENCE, seed=seed))
             for name in names}
    unclear = _cannot_tell("ordered", *(check for name in names for check in (
        enough_points(len(groups[name]), MIN_REPLICATES, what=name),
        has_width(*stats[name][1], what=f"the interval of the median of {name}"))))
    if unclear:
        return unclear
    inverted = [(a, b) for a, b in zip(names, names[1:]) if stats[a][0] >= stats[b][0]]
    if inverted:
        text = "; ".join(f"the median of {b} is {'below' if stats[a][0] > stats[b][0] else 'level with'} that "
                         f"of {a} ({_fmt(stats[b][0])} vs {_fmt(stats[a][0])})" for a, b in inverted)
        return Verdict(NO, text, rule="ordered")
    overlapping = [(a, b) for a, b in zip(names, names[1:]) if stats[a][1][1] >= stats[b][1][0]]
    if overlapping:
        text = "; ".join(f"the intervals of {a} and {b} overlap" for a, b in overlapping)
        return Verdict(PARTLY, f"the medians are in order, but {text}", rule="ordered")
    return Verdict(YES, rule="ordered")


@_gated
def more_concentrated(a: Sequence[float], b: Sequence[float], *, what_a: str, what_b: str,
                      seed: int = 0) -> Verdict:
    """Are the values of group ``a`` more concentrated than those of ``b``?

    Spread is the interquartile range of log10 values (positive values only).
    yes: the :data:`CONFIDENCE` bootstrap interval of IQR(b) - IQR(a) lies
    above 0. partly: IQR(a) < IQR(b) but the interval contains 0. no: IQR(a) >= IQR(b).
    cannot tell: a group has fewer than :data:`MIN_CORRELATION_POINTS` values (no quartiles to speak of).
    """
    unclear = _cannot_tell("more_concentrated", enough_points(len(a), MIN_CORRELATION_POINTS, what=what_a),
                           enough_points(len(b), MIN_CORRELATION_POINTS, what=what_b))
    if unclear:
        return unclear
    a, b = (np.log10(np.asarray(v, float)) for v in (a, b))
    def iqr(v):
        return float(np.subtract(*np.quantile(v, [0.75, 0.25])))
    gap = iqr(b) - iqr(a)
    text = f"IQR of log10 values: {what_a} {iqr(a):.2f} vs {what_b} {iqr(b):.2f}"
    if gap <= 0:
        return Verdict(NO, f"{what_a} is not more concentrated than {what_b}: {text}",
                       rule="more_concentrated")
    rng = np.random.default_rng(seed)
    draws = [iqr(rng.choice(b, b.size)) - iqr(rng.choice(a, a.size)) for _ in range(2000)]
    if float(np.quantile(draws, (1 - CONFIDENCE) / 2)) > 0:
        return Verdict(YES, rule="more_concentrated")
    return Verdict(PARTLY, f"{text}: narrower, but within the bootstrap noise", rule="more_concentrated")


@_gated
def ratio_near(measured: float, expected: float, *, what: str = "the ratio") -> Verdict:
    """Is ``measured`` about ``expected`` (within :data:`RATIO_TOLERANCE` either way)?

    yes: within the tolerance. partly: on the same side of 1 as ``expected``
    but outside the tolerance. no: on the other side of 1 (the effect has the
    wrong direction) or exactly 1. With ``expected == 1`` ("the two are alike")
    a measured ratio outside the tolerance is a plain no.
    """
    if not (measured > 0 and expected > 0):
        raise ValueError(f"ratios must be positive, got measured={measured}, expected={expected}.")
    if expected / RATIO_TOLERANCE <= measured <= expected * RATIO_TOLERANCE:
        return Verdict(YES, rule="ratio_near")
    if expected == 1:  # "the two are alike": there is no direction to get wrong, only a distance
        return Verdict(NO, f"{what} is {measured:.3g}, not within a factor {RATIO_TOLERANCE:g} of 1",
                       rule="ratio_near")
    if (measured - 1) * (expected - 1) > 0:
        size = "smaller" if abs(math.log(measured)) < abs(math.log(expected)) else "larger"
        return Verdict(PARTLY, f"{what} is {measured:.3g}, the right direction but {size} than "
                               f"{expected:.3g}", rule="ratio_near")
    return Verdict(NO, f"{what} is {measured:.3g}: the effect goes the other way", rule="ratio_near")


@_gated
def correlates(rho: float | Correlation, *, what: str = "the two scores") -> Verdict:
    """Do two scores rank samples alike? yes: Spearman >= :data:`STRONG_CORRELATION`;
    partly: >= :data:`MODERATE_CORRELATION`; no: below. A :class:`Correlation` must rest on
    :data:`MIN_CORRELATION_POINTS` pairs and an interval of non-zero width (else cannot tell)."""
    rho, text, unclear = _correlation(rho, "correlates")
    if unclear:
        return unclear
    if rho >= STRONG_CORRELATION:
        return Verdict(YES, rule="correlates")
    if rho >= MODERATE_CORRELATION:
        return Verdict(PARTLY, f"{what} correlate only moderately ({text})", rule="correlates")
    return Verdict(NO, f"{what} rank samples differently ({text})", rule="correlates")


@_gated
def weakly_correlated(rho: float | Correlation, *, what: str = "the two scores") -> Verdict:
    """Is a correlation weak? yes: abs(rho) < :data:`WEAK_CORRELATION`; partly: below
    :data:`MODERATE_CORRELATION`; no: at or above it. Preconditions as :func:`correlates`."""
    rho, text, unclear = _correlation(rho, "weakly_correlated")
    if unclear:
        return unclear
    if abs(rho) < WEAK_CORRELATION:
        return Verdict(YES, rule="weakly_correlated")
    if abs(rho) < MODERATE_CORRELATION:
        return Verdict(PARTLY, f"{what} correlate moderately ({text})", rule="weakly_correlated")
    return Verdict(NO, f"{what} correlate well above weakly ({text})", rule="weakly_correlated")


@_gated
def differ(rho: float | Correlation, *, what: str = "the two scores") -> Verdict:
    """Do two scores rank samples differently? yes: Spearman < :data:`MODERATE_CORRELATION`;
    partly: below :data:`STRONG_CORRELATION`; no: at or above it (they rank alike).
    Preconditions as :func:`correlates`."""
    rho, text, unclear = _correlation(rho, "differ")
    if unclear:
        return unclear
    if rho < MODERATE_CORRELATION:
        return Verdict(YES, rule="differ")
    if rho < STRONG_CORRELATION:
        return Verdict(PARTLY, f"{what} differ only moderately ({text})", rule="differ")
    return Verdict(NO, f"{what} rank samples alike ({text})", rule="differ")


@_gated
def approximates(spearman: float | Correlation, median_rel_error: float, *,
                 what: str = "the approximation") -> Verdict:
    """Does an approximation reproduce a reference, in ranking and in value?

    ranking: Spearman >= :data:`STRONG_CORRELATION`; value: median relative
    error <= :data:`CLOSE_RELATIVE_ERROR`. Both: yes; one: partly; none: no.
    Preconditions of the ranking as :func:`correlates`.
    """
    spearman, ranking, unclear = _correlation(spearman, "approximates")
    if unclear:
        return unclear
    rank_ok = spearman >= STRONG_CORRELATION
    value_ok = median_rel_error <= CLOSE_RELATIVE_ERROR
    values = f"median relative error {median_rel_error:.0%}"
    if rank_ok and value_ok:
        return Verdict(YES, rule="approximates")
    if rank_ok:
        return Verdict(PARTLY, f"{what} ranks like the reference ({ranking}) but its values are off "
                               f"({values})", rule="approximates")
    if value_ok:
        return Verdict(PARTLY, f"{what} has close values ({values}) but ranks differently ({ranking})",
                       rule="approximates")
    return Verdict(NO, f"{what} neither ranks ({ranking}) nor values ({values}) like the reference",
                   rule="approximates")


@_gated
def exceeds(a: Sequence[float], b: Sequence[float], *, what_a: str, what_b: str, seed: int = 0) -> Verdict:
    """Is quantity ``a`` larger than ``b``, beyond the noise of repeated measurements?

    ``a`` and ``b`` are repeated measurements (seeds, bootstrap draws) of each
    quantity. yes: the :data:`CONFIDENCE` bootstrap interval of mean(a) - mean(b)
    lies above 0. partly: mean(a) > mean(b) but the interval contains 0.
    no: mean(a) <= mean(b). cannot tell: neither quantity has :data:`MIN_REPLICATES`
    measurements, or neither one's measurements vary (no noise to judge against). One
    deterministic measurement against repeated ones (a ranking against random orders) is judged.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0 or b.size == 0:
        raise ValueError("exceeds needs at least one measurement of each quantity.")
    if max(a.size, b.size) < MIN_REPLICATES:
        return Verdict(CANNOT_TELL, f"one measurement each of {what_a} and {what_b}: no noise to judge the "
                                    f"difference by", rule="exceeds")
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Verdict(CANNOT_TELL, f"the repeats of {what_a} and of {what_b} are identical, one measurement "
                                    f"each repeated", rule="exceeds")
    gap = float(a.mean() - b.mean())
    text = f"mean {what_a} {_fmt(a.mean())} vs {what_b} {_fmt(b.mean())}"
    if gap <= 0:
        return Verdict(NO, f"{what_a} is not above {what_b}: {text}", rule="exceeds")
    rng = np.random.default_rng(seed)
    draws = [rng.choice(a, a.size).mean() - rng.choice(b, b.size).mean() for _ in range(2000)]
    low = float(np.quantile(draws, (1 - CONFIDENCE) / 2))
    if low > 0:
        return Verdict(YES, rule="exceeds")
    return Verdict(PARTLY, f"{text}, within the noise of {min(a.size, b.size)} repeats", rule="exceeds")


@_gated
def best(groups: Mapping[str, Sequence[float]], which: str, *, what: str = "the value", lower: bool = False,
         seed: int = 0) -> Verdict:
    """Is group ``which`` the best of ``groups``: the highest (or, with ``lower``, the lowest)?

    ``groups`` maps each group to repeated measurements (seeds) of one quantity. ``which`` is
    compared with every other group by :func:`exceeds` (on negated values with ``lower``).
    yes: ``which`` beats every other group beyond the noise. partly: its mean is the best, but
    within the noise of some group. no: some group's mean is at least as good; the detail names it.
    cannot tell: some comparison cannot tell (too few or identical repeats).
    """
    if which not in groups or len(groups) < 2:
        raise ValueError(f"best needs {which!r} among at least two groups; got {sorted(groups)}.")
    sign, word = (-1.0, "lowest") if lower else (1.0, "highest")
    others = [name for name in groups if name != which]
    mean = {name: float(np.mean(groups[name])) for name in groups}
    found = {name: exceeds(sign * np.asarray(groups[which], float), sign * np.asarray(groups[name], float),
                           what_a=which, what_b=name, seed=seed) for name in others}
    unclear = [found[name].detail for name in others if found[name].status == CANNOT_TELL]
    if unclear:
        return Verdict(CANNOT_TELL, "; ".join(dict.fromkeys(unclear)), rule="best")
    beaten = [name for name in others if found[name].status == NO]
    if beaten:
        text = "; ".join(f"{name} {_fmt(mean[name])} vs {which} {_fmt(mean[which])}" for name in beaten)
        return Verdict(NO, f"{which} does not have the {word} mean {what}: {text}", rule="best")
    close = [name for name in others if found[name].status == PARTLY]
    if close:
        text = ", ".join(f"{name} ({_fmt(mean[name])})" for name in close)
        return Verdict(PARTLY, f"{which} has the {word} mean {what} ({_fmt(mean[which])}), but within the noise "
                               f"of {text}", rule="best")
    return Verdict(YES, rule="best")


@_gated
def settles(spearman_by_step: Mapping[int, float], *, what: str = "the ranking") -> Verdict:
    """Does a ranking stay consistent after an initial warm-up of the training?

    ``spearman_by_step`` maps training steps (e.g. epochs) to the Spearman correlation of the
    ranking at that step with a reference. The warm-up is the first :data:`WARMUP_FRACTION`
    of the last step; the snapshots after it are judged. yes: every one has Spearman >=
    :data:`STRONG_CORRELATION`; partly: every one >= :data:`MODERATE_CORRELATION`; no:
    some snapshot after the warm-up is below that.
    """
    if not spearman_by_step or min(spearman_by_step) < 1:
        raise ValueError(f"settles needs snapshots at steps >= 1, got {sorted(spearman_by_step)}.")
    warmup = WARMUP_FRACTION * max(spearman_by_step)
    after = {step: rho for step, rho in sorted(spearman_by_step.items()) if step > warmup}
    low_step = min(after, key=after.get)
    text = f"lowest Spearman after the warm-up (step > {warmup:g}): {after[low_step]:.3f} at step {low_step}"
    if after[low_step] >= STRONG_CORRELATION:
        return Verdict(YES, rule="settles")
    if after[low_step] >= MODERATE_CORRELATION:
        return Verdict(PARTLY, f"{what} stays only moderately consistent ({text})", rule="settles")
    return Verdict(NO, f"{what} still changes after the warm-up ({text})", rule="settles")


@_gated
def breaks_down(ratios: Mapping[str, float], *, at: Sequence[str], what: str = "the estimator") -> Verdict:
    """Does an estimator break down exactly in the regimes ``at``?

    ``ratios`` maps each regime to estimate / true value (NaN or <= 0 when the
    estimate is unusable). A regime is broken when the ratio is outside
    ``[1/BREAKDOWN_FACTOR, BREAKDOWN_FACTOR]`` (:data:`BREAKDOWN_FACTOR`) or not
    positive. yes: broken in every regime of ``at`` and in none of the others.
    partly: broken in some of ``at``, or also elsewhere. no: in none of ``at``.
    """
    def broken(r: float) -> bool:
        return not (r > 0) or not (1 / BREAKDOWN_FACTOR <= r <= BREAKDOWN_FACTOR)

    unknown = set(at) - set(ratios)
    if unknown:
        raise ValueError(f"regimes {sorted(unknown)} have no measured ratio.")
    hit = [name for name in at if broken(ratios[name])]
    elsewhere = [name for name in ratios if name not in at and broken(ratios[name])]
    text = ", ".join(f"{name}: {ratios[name]:.3g}x" for name in ratios)
    if not hit:
        return Verdict(NO, f"{what} stays within {BREAKDOWN_FACTOR:g}x of the truth where the claim says it breaks "
                           f"down ({text})", rule="breaks_down")
    if len(hit) < len(at):
        missing = [name for name in at if name not in hit]
        return Verdict(PARTLY, f"{what} breaks down at {', '.join(hit)} but not at {', '.join(missing)} ({text})",
                       rule="breaks_down")
    if elsewhere:
        return Verdict(PARTLY, f"{what} breaks down at {', '.join(at)}, but also at {', '.join(elsewhere)} "
                               f"({text})", rule="breaks_down")
    return Verdict(YES, rule="breaks_down")


@_gated
def beats(differences: Sequence[float], *, what_a: str, what_b: str, metric: str = "AUROC") -> Verdict:
    """Does score ``a`` do better than score ``b`` on the same samples?

    ``differences`` are paired bootstrap draws of ``metric(a) - metric(b)``,
    both computed on the same resample each time (for example from
    :func:`lsi.compare.paired_differences`). yes: the :data:`CONFIDENCE`
    interval of the differences lies above 0. partly: their mean is above 0
    but the interval contains 0. no: the mean is at or below 0; the detail
    says whether b is then ahead beyond the noise. cannot tell: the differences do not vary.
    """
    d = np.asarray(differences, float)
    if d.size < 2:
        raise ValueError("beats needs at least two bootstrap differences.")
    if np.ptp(d) == 0:
        return Verdict(CANNOT_TELL, f"every bootstrap difference of {metric} is {d[0]:+.3g}: the resamples do not "
                                    f"vary", rule="beats")
    tail = (1 - CONFIDENCE) / 2
    low, high = (float(q) for q in np.quantile(d, [tail, 1 - tail]))
    text = f"{metric} {what_a} - {what_b} = {d.mean():+.3f} ({CONFIDENCE:.0%} interval {low:+.3f} to {high:+.3f})"
    if low > 0:
        return Verdict(YES, rule="beats")
    if d.mean() > 0:
        return Verdict(PARTLY, f"{text}: ahead, but within the bootstrap noise", rule="beats")
    behind = "behind beyond the noise" if high < 0 else "not ahead"
    return Verdict(NO, f"{what_a} is {behind}: {text}", rule="beats")


@_gated
def trend(levels: Sequence[float], values: Sequence[float], *, increasing: bool = True, what: str = "the value",
          level: str = "the level", seed: int = 0) -> Verdict:
    """Does ``values`` rise (or, with ``increasing=False``, fall) with ``levels``, a monotone trend?

    ``levels[i]`` is the level (noise rate, corruption strength, ...) at which sample ``i``
    was measured, ``values[i]`` its value. The statistic is the Spearman of level vs value
    over all samples with its :data:`CONFIDENCE` bootstrap interval (:func:`spearman`).
    yes: the interval lies on the claimed side of 0. partly: Spearman is on that side but the
    interval contains 0. no: Spearman is 0 or on the other side. cannot tell: fewer than
    :data:`MIN_SLOPE_POINTS` distinct levels, fewer than :data:`MIN_CORRELATION_POINTS`
    samples, or an interval of zero width.
    """
    levels, values = np.asarray(levels, float), np.asarray(values, float)
    unclear = _cannot_tell("trend", enough_points(np.unique(levels).size, MIN_SLOPE_POINTS, what=f"distinct {level}s"),
                           enough_points(levels.size, MIN_CORRELATION_POINTS, what="samples"))
    if unclear:
        return unclear
    found = spearman(levels, values, seed=seed)
    unclear = _cannot_tell("trend", has_width(found.low, found.high, what="the Spearman's bootstrap interval"))
    if unclear:
        return unclear
    sign, word = (1, "rise") if increasing else (-1, "fall")
    if (found.low > 0) if increasing else (found.high < 0):
        return Verdict(YES, rule="trend")
    if sign * found.rho > 0:
        return Verdict(PARTLY, f"{what} tends to {word} with {level}, but within the bootstrap noise ({found})",
                       rule="trend")
    return Verdict(NO, f"{what} does not {word} with {level} ({found})", rule="trend")


def fitted_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log10(y) against log10(x) (positive values only)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("a log-log slope needs positive x and y.")
    return float(np.polyfit(np.log10(x), np.log10(y), 1)[0])


@_gated
def scales_like(x: Sequence[float], y: Sequence[float], expected_slope: float, *, what: str = "the value",
                law: str = "") -> Verdict:
    """Does ``y`` scale like ``x ** expected_slope`` (e.g. LSI like 1/n, ``expected_slope = -1``)?

    The log-log slope s (:func:`fitted_slope`) means a change by ``10**s`` per tenfold x; it is
    judged by :func:`ratio_near` against ``10**expected_slope``, as strictly as any other ratio:
    a slope of -0.71 (5.1x per decade) is not 1/n (10x). yes: within :data:`RATIO_TOLERANCE`;
    partly: the right direction but outside; no: the other direction. cannot tell: fewer than
    :data:`MIN_SLOPE_POINTS` distinct x.
    """
    unclear = _cannot_tell("scales_like", enough_points(np.unique(np.asarray(x, float)).size, MIN_SLOPE_POINTS,
                                                        what="distinct sizes"))
    if unclear:
        return unclear
    slope = fitted_slope(x, y)
    law = law or f"x^{expected_slope:g}"
    found = ratio_near(10 ** slope, 10 ** expected_slope, what=f"the change of {what} per tenfold x")
    if found.status == YES:
        return Verdict(YES, rule="scales_like")
    return Verdict(found.status, f"{found.detail} (log-log slope {slope:.2f}; {law}: {expected_slope:g})",
                   rule="scales_like")


__all__ = ["BREAKDOWN_FACTOR", "CANNOT_TELL", "CLAIMS_METADATA", "CLOSE_RELATIVE_ERROR", "CONFIDENCE", "CONVERGED_GRADIENT_NORM", "Claim",
           "Correlation", "DETERMINED_FRACTION", "EXPONENTIAL_P99_OVER_MEDIAN", "EXPONENTIAL_TOP10_SHARE", "MIN_CORRELATION_POINTS",
           "MIN_REPLICATES", "MIN_SLOPE_POINTS", "MODERATE_CORRELATION", "NO", "PARTLY", "Precondition",
           "RATIO_TOLERANCE", "STATUSES", "STRONG_AUROC", "STRONG_CORRELATION", "Verdict", "WEAK_AUROC",
           "WEAK_CORRELATION", "YES", "all_of", "approximates", "beats", "best", "breaks_down", "converged",
           "correlates", "determined", "differ", "enough_points", "exceeds", "fitted_slope", "has_width", "independent",
           "long_tail", "minimum", "more_concentrated", "ordered", "ratio_near", "scales_like", "separates", "settles",
           "spearman", "trend", "weakly_correlated"]
