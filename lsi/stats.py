"""Small analyses the book's chapters share: extremes per class, tails, AUROC, agreement.

These turn score tables (one row per sample, as returned by
:func:`lsi.compute_lsi`) into the numbers a chapter reports, so that the
notebooks hold narrative and calls only.
"""
from __future__ import annotations

from typing import Any

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score


def extremes(scores: pd.DataFrame, k: int = 5, *, by: str = "label", score: str = "lsi",
             names: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``k`` lowest- and highest-scoring samples of every class.

    Returns columns ``class`` (a name from ``names`` if given), ``end``
    (``"lowest"``/``"highest"``), ``rank`` (0 = most extreme), ``id``,
    ``index``, ``label`` and the score.
    """
    rows = []
    for label, group in scores.groupby(by, sort=True):
        ordered = group.sort_values(score, kind="stable")
        for end, picks in (("lowest", ordered.head(k)), ("highest", ordered.tail(k)[::-1])):
            picks = picks.assign(end=end, rank=np.arange(len(picks)),
                                 **{"class": names[int(label)] if names is not None else label})
            rows.append(picks)
    columns = ["class", "end", "rank", "id", "index", by, score]
    return pd.concat(rows, ignore_index=True)[[c for c in dict.fromkeys(columns)]]


def tail_summary(values: Sequence[float]) -> dict[str, float]:
    """Shape of a score distribution: quantiles and how much the top decile holds.

    ``top10_share`` is the fraction of the total score held by the 10% highest
    samples (0.1 for a flat distribution); ``p99_over_median`` measures the tail;
    ``iqr_log10`` is the interquartile range of log10 scores (the spread).
    """
    values = np.sort(np.asarray(values, dtype=float))
    top = values[int(np.floor(0.9 * len(values))):]
    median = float(np.median(values))
    return {
        "n": int(len(values)),
        "median": median,
        "mean": float(values.mean()),
        "p90": float(np.quantile(values, 0.9)),
        "p99": float(np.quantile(values, 0.99)),
        "max": float(values[-1]),
        "p99_over_median": float(np.quantile(values, 0.99) / median) if median > 0 else np.inf,
        "top10_share": float(top.sum() / values.sum()),
        "skew_log10": float(stats.skew(np.log10(values))) if (values > 0).all() else np.nan,
        "iqr_log10": float(np.subtract(*np.quantile(np.log10(values), [0.75, 0.25])))
        if (values > 0).all() else np.nan,
    }


def separation(scores: Sequence[float], positive: Sequence[bool]) -> dict[str, float]:
    """How well a score singles out the positive samples (e.g. flipped labels).

    ``auroc`` is the probability that a random positive scores above a random
    negative; ``above_max_negative`` is the fraction of positives scoring
    above every negative.
    """
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    if positive.all() or not positive.any():
        raise ValueError("separation needs both positive and negative samples.")
    pos, neg = scores[positive], scores[~positive]
    return {
        "n_positive": int(positive.sum()),
        "n_negative": int((~positive).sum()),
        "median_positive": float(np.median(pos)),
        "median_negative": float(np.median(neg)),
        "median_ratio": float(np.median(pos) / np.median(neg)),
        "auroc": float(roc_auc_score(positive, scores)),
        "above_max_negative": float((pos > neg.max()).mean()),
    }


def separation_by(scores: pd.DataFrame, positive: str, by: str, *, score: str = "lsi",
                  names: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`separation` of ``scores[positive]`` inside every group of ``scores[by]`` (e.g. per class),
    one row per group (named by ``names[group]`` if given); groups without both kinds are left out."""
    rows = {}
    for group, part in scores.groupby(by, sort=True):
        if part[positive].any() and not part[positive].all():
            rows[names[int(group)] if names is not None else group] = separation(part[score], part[positive])
    return pd.DataFrame(rows).T


def agreement(estimate: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """How closely one set of scores reproduces a reference set of the same samples.

    Spearman rank correlation, Pearson correlation of log10 scores and the
    median and maximum relative error ``|e - r| / |r|``.
    """
    estimate, reference = np.asarray(estimate, float), np.asarray(reference, float)
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate and reference differ in shape: {estimate.shape} vs "
                         f"{reference.shape}; score the same samples.")
    relative = np.abs(estimate - reference) / np.abs(reference)
    positive = (estimate > 0) & (reference > 0)
    return {
        "spearman": float(stats.spearmanr(estimate, reference).statistic),
        "pearson_log10": float(stats.pearsonr(np.log10(estimate[positive]),
                                              np.log10(reference[positive])).statistic),
        "median_rel_error": float(np.median(relative)),
        "max_rel_error": float(relative.max()),
    }


def bootstrap_interval(values: Sequence[float], statistic=np.median, *, confidence: float = 0.95,
                       n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(values)`` (resampling with replacement, seeded)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_interval needs at least one value.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence == {confidence}, must be in (0, 1).")
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(values[rng.integers(0, values.size, values.size)])
                      for _ in range(n_resamples)])
    tail = (1 - confidence) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def disagreements(scores: pd.DataFrame, first: str, second: str, *, k: int = 6) -> pd.DataFrame:
    """Samples ranked high by one score and in the lower half by the other, as a gallery table.

    For each direction (``first`` high / ``second`` low, and the reverse) the
    ``k`` samples with the highest rank percentile by the first-named score
    among those below the median of the other. Columns as
    :func:`extremes` (``class`` names the direction, ``end`` is ``"highest"``)
    with ``rank_pct``, the percentile (1 = most informative) by the score named first.
    """
    pct = {name: scores[name].rank(pct=True) for name in (first, second)}
    rows = []
    for high, low in ((first, second), (second, first)):
        picks = scores.assign(rank_pct=pct[high])[pct[low] < 0.5].nlargest(k, "rank_pct")
        rows.append(picks.assign(**{"class": f"high {high}, low {low}", "end": "highest",
                                    "rank": np.arange(len(picks))}))
    return pd.concat(rows, ignore_index=True)


def compare_tiers(tables: Mapping[str, pd.DataFrame], reference: pd.DataFrame) -> pd.DataFrame:
    """How each solver tier's LSI compares with a reference table (usually the converged tier).

    Every table in ``tables`` (as returned by :func:`lsi.compute_lsi`, keyed by
    a name) is aligned with ``reference`` on ``index``, over the samples it
    scored. One row per tier: samples scored, seconds per scored sample, the
    :func:`agreement` with the reference and the full-data gradient norm the
    tier reached.
    """
    reference = reference.set_index("index")["lsi"]
    rows = []
    for name, table in tables.items():
        meta = table.attrs["lsi"]
        rows.append({"solver": name, "samples scored": len(table),
                     "seconds per sample": meta["wall_time_s"] / len(table),
                     **agreement(table["lsi"].to_numpy(), reference.loc[table["index"]].to_numpy()),
                     "full-data grad norm": meta.get("full_data_grad_norm", np.nan)})
    return pd.DataFrame(rows)


def accuracy(logits_or_probs: np.ndarray, labels: Sequence[int]) -> float:
    """Top-1 accuracy of class scores against labels."""
    return float((np.asarray(logits_or_probs).argmax(axis=1) == np.asarray(labels)).mean())


def gaussian_kl_diag(mean0: Sequence[float], precision0: Sequence[float], mean1: Sequence[float],
                     precision1: Sequence[float]) -> dict[str, float]:
    """KL( N(mean0, diag(precision0)^-1) || N(mean1, diag(precision1)^-1) ) and its two terms.

        mean term       = 1/2 sum_k p1_k (m1_k - m0_k)^2
        covariance term = 1/2 sum_k (r_k - 1 - log r_k),  r_k = p1_k / p0_k

    Evaluated by :func:`lsi.kl.kl_diag` (float64, ``d - log1p(d)`` with
    ``d = r - 1``), the formula LSI uses for the diagonal Laplace posteriors.
    """
    import torch

    from lsi.curvature import Diag
    from lsi.kl import kl_diag

    p0, p1 = (torch.as_tensor(np.asarray(p, float))[None] for p in (precision0, precision1))
    delta = torch.as_tensor(np.asarray(mean1, float) - np.asarray(mean0, float))[None]
    zero = torch.zeros(1, dtype=torch.float64)
    mean, cov = kl_diag(Diag(p0, zero), Diag(p1, zero), delta)
    return {"mean_term": float(mean[0]), "cov_term": float(cov[0]), "kl": float(mean[0] + cov[0])}


def naive_cov_term(precision0: Sequence[float], precision1: Sequence[float],
                   dtype: str = "float32") -> float:
    """The covariance term as the textbook ``1/2 (sum r - K - sum log r)`` in ``dtype``.

    Shown in the book only to demonstrate the cancellation that the stable
    formula of :func:`gaussian_kl_diag` avoids.
    """
    r = np.asarray(precision1, dtype=dtype) / np.asarray(precision0, dtype=dtype)
    return float(np.asarray(0.5, dtype) * (r.sum(dtype=dtype) - np.asarray(len(r), dtype)
                                           - np.log(r).sum(dtype=dtype)))


def principal_components(features: np.ndarray, dim: int) -> np.ndarray:
    """Project features onto their top ``dim`` principal components (unsupervised, no labels).

    A linear probe on d features has K = (d + 1) C parameters, and the
    converged and newton-step tiers factor the K x K Hessian (O(K^3)) and
    apply its inverse to every sample (O(K^2 C) each). Projecting d = 1,280
    encoder features to a few hundred components makes that affordable on a
    CPU. ``dim <= 0`` or ``dim >= d`` returns the features unchanged.
    """
    from sklearn.decomposition import PCA

    features = np.asarray(features, dtype=np.float64)
    if dim <= 0 or dim >= features.shape[1]:
        return features
    if dim > min(features.shape):
        raise ValueError(f"dim={dim} exceeds min(n_samples, n_features)={min(features.shape)}.")
    return PCA(n_components=dim, svd_solver="full").fit_transform(features)


def principal_projection(train: Any, test: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``train`` and ``test`` features on the top ``dim`` principal components of ``train``
    (as :func:`principal_components`; ``dim <= 0`` keeps all features)."""
    from sklearn.decomposition import PCA

    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    if dim <= 0 or dim >= train.shape[1]:
        return train, test
    pca = PCA(n_components=dim, svd_solver="full").fit(train)
    return pca.transform(train), pca.transform(test)


def spread_across(scores: Any, k: int) -> np.ndarray:
    """Positions of ``k`` samples at evenly spaced ranks of ``scores``, lowest to highest (the ground-truth picks)."""
    scores = np.asarray(scores, float)
    if not 1 <= k <= len(scores):
        raise ValueError(f"k == {k}, must be between 1 and the {len(scores)} scores.")
    order = np.argsort(scores, kind="stable")
    return np.sort(order[np.unique(np.round(np.linspace(0, len(scores) - 1, k)).astype(int))])


def spearman_interval(a: Any, b: Any, *, n_resamples: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> dict[str, float]:
    """Spearman correlation of paired scores and its percentile bootstrap interval (pairs resampled, seeded)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 3:
        raise ValueError(f"a and b must be paired 1-d scores of the same samples (at least 3); got shapes "
                         f"{a.shape} and {b.shape}.")
    rng = np.random.default_rng(seed)
    draws = [stats.spearmanr(a[i], b[i]).statistic for i in (rng.integers(0, len(a), len(a)) for _ in range(n_resamples))]
    tail = (1 - confidence) / 2
    low, high = np.nanquantile(draws, [tail, 1 - tail])
    return {"spearman": float(stats.spearmanr(a, b).statistic), "low": float(low), "high": float(high), "n": len(a)}
