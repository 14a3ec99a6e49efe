"""The paper's experiments as functions over :func:`lsi.compute_lsi`: the chapters call these.

* :func:`lsi_vs_size` - LSI of the *same* samples inside nested data sets of growing
  size (App. F, Fig. 1): only the scored samples are left out, so the cost grows with
  the set but not with the number of scores.
* :func:`regime_slopes` - log-log slopes of median LSI against n, fitted separately
  below the parameter count and far above it.
* :func:`feature_noise_sweep` - Gaussian noise on one class's features at several
  variances, LSI of every class (Fig. 7 right).
* :func:`label_flip_run` - LSI with a fraction of labels flipped (Fig. 5), flagged.
* :func:`binary_task` and :func:`probe_accuracy` - equal-size two-class tasks of
  different difficulty and the held-out accuracy of the same probe.
* :func:`median_intervals` - per-group medians with bootstrap intervals (Fig. 7 left).
* :func:`lsi_during_training` and :func:`rankings_over_training` - the ``gd`` tier's LSI after
  several training lengths, and how each ranking agrees with a reference (App. G).
* :func:`lsi_with_notes` - :func:`lsi.compute_lsi` with its warnings returned as notes for a page.
* :func:`score_probes` - LSI of one data set under several probes or tiers, with the reason
  wherever a tier does not apply (the paper's MLP probe against the linear one, Sec. 4.1).
* :func:`table1` and :func:`table1_claims` - the Spearman correlations of App. D's Table 1 with
  bootstrap intervals, and their claim rows gated on the networks' convergence;
  :func:`certified_leave_one_out` - a smooth network's exact leave-one-out LSI, run only from a certified minimum
  and gated on whether the gradient norms pin the networks down.
* :func:`lsi_subsets`, :func:`learnability`, :func:`seed_intervals`, :func:`by_subset` and
  :func:`learnability_cost` - low/mid/high-LSI subsets and a random one, the probe and pixel
  networks trained on each, their train and test accuracy across seeds (Sec. 4.3-4.4, Figs. 8-9, App. J).
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from lsi import corruptions, networks, training
from lsi.stats import bootstrap_interval
from lsi.api import compute_lsi
from lsi.data import stratified_positions
from lsi.defaults import PAPER, RUN
from lsi.probes import LinearProbe
from lsi.validation import check_features, check_labels

FAR_ABOVE = 4
"""n counts as far above the parameter count K from n >= FAR_ABOVE * K (fixed before any run)."""

PAPER_TABLE1 = {("probe", "all parameters"): 0.93, ("last layer", "all parameters"): 0.98,
                ("probe", "last layer"): 0.90}
"""The paper's Table 1 (App. D): Spearman correlations of LSI computed three ways on 400 CIFAR-10 samples,
on the feature probe, on the last layer of the CNN and on all its parameters."""


def table1(scores: pd.DataFrame, *, last_layer: str = "last layer", seed: int = 0) -> dict:
    """Table 1's Spearman correlations (:data:`PAPER_TABLE1`'s pairs) between the columns of ``scores``.

    ``scores`` has one row per sample and the columns ``"probe"``, ``"all parameters"`` and
    ``last_layer`` (the reading of the last layer to use). Returns ``{pair: Correlation}``
    with :data:`lsi.claims.CONFIDENCE` bootstrap intervals (:func:`lsi.claims.spearman`).
    """
    from lsi.claims import spearman

    column = lambda part: last_layer if part == "last layer" else part
    return {(a, b): spearman(scores[column(a)], scores[column(b)], seed=seed) for a, b in PAPER_TABLE1}


def table1_frame(correlations: Mapping[str, Mapping]) -> pd.DataFrame:
    """One row per Table 1 pair and reading: the paper's value, Spearman and its interval.
    ``correlations`` maps a reading (e.g. ``"last layer retrained"``) to :func:`table1`'s result."""
    return pd.DataFrame([{"pair": f"{a} ~ {b}", "paper": PAPER_TABLE1[a, b], "reading": reading,
                          "Spearman": c.rho, "95% low": c.low, "95% high": c.high}
                         for reading, found in correlations.items() for (a, b), c in found.items()])


TABLE1_CLAIMS = {("probe", "all parameters"): "LSI on the probe ranks samples like LSI on all the CNN's parameters",
                 ("last layer", "all parameters"): "LSI on the last layer ranks samples like LSI on all parameters",
                 ("probe", "last layer"): "LSI on the probe ranks samples like LSI on the last layer"}
"""Table 1's pairs as claims (App. D)."""


def table1_claims(networks_: Mapping[str, tuple[Mapping | None, Any, str]], *, tol: float) -> list:
    """Claim rows of Table 1 for each network: ``{name: (table1 correlations, convergence, tier)}``.

    ``convergence`` is :func:`lsi.claims.converged` of the network's largest gradient norm at
    ``tol``: a network that has not converged gets "cannot tell", whatever its correlation.
    Correlations ``None`` (not measured: see :func:`certified_leave_one_out`) need a failed
    ``convergence``, which is then the reason. Each row is judged by :func:`lsi.claims.correlates`;
    rows are ordered by pair, then network.
    """
    from lsi.claims import CANNOT_TELL, Claim, Verdict, correlates

    rows = []
    for pair, text in TABLE1_CLAIMS.items():
        for name, (found, convergence, tier) in networks_.items():
            if found is None and convergence.holds:
                raise ValueError(f"{name}: no correlations were measured although its networks converged.")
            gate = "every network within" if convergence.holds else convergence.why
            verdict = (Verdict(CANNOT_TELL, convergence.why, rule="correlates") if found is None else
                       correlates(found[pair], what=f"{pair[0]} and {pair[1]} LSI", requires=[convergence]))
            rows.append(Claim(claim=f"{text} (App. D, Table 1: Spearman {PAPER_TABLE1[pair]}); {name}.",
                              ours=f"{'not measured' if found is None else found[pair]}; "
                                   f"gradient tolerance {tol:g}: {gate}", verdict=verdict, tier=tier))
    return rows


def certified_leave_one_out(fitted: networks.Network, fit_info: Mapping, inputs: torch.Tensor,
                            labels: torch.Tensor, indices: Sequence[int], *, weight_decay: float, tol: float,
                            smallest_eigenvalue: float, ids: Sequence | None = None, what: str = "the smooth CNNs",
                            checkpoint: str | None = None, progress: bool = False):
    """Exact leave-one-out LSI of a smooth network (:func:`lsi.networks.leave_one_out_lsi`, with the head's
    marginals as ``lsi_last_layer``), only from a certified full-data minimum.

    Every left-out network is warm-started at ``theta_D``, so none is solved (solving hundreds costs hours
    for numbers no rule may judge) when ``theta_D`` is not a certified minimum:

    * the zero network (``fit_info["trivial"]``): an optimum its gradient norm certifies, not a trained network;
    * ``theta_D`` not within ``tol`` (``fit_info["reached_tol"]``): no left-out network can be certified either;
    * ``smallest_eigenvalue`` (of the Hessian at ``theta_D``, :func:`lsi.networks.smallest_hessian_eigenvalue`)
      not positive: a saddle point (:func:`lsi.claims.minimum`).

    Otherwise the left-out networks are solved (resumable through ``checkpoint``) and the gate is
    :func:`lsi.claims.all_of` two checks: :func:`lsi.claims.converged` (the largest gradient norm over every
    network) and :func:`lsi.claims.determined`: each displacement ``theta_-i - theta_D`` is known to within
    ``(||g_i|| + ||g_D||) / mu``, the two networks' distance bounds to their optima, with ``mu`` the smallest
    eigenvalue at ``theta_D`` standing in for the left-out one's. Returns ``(table or None, gate)``.
    """
    from lsi.claims import Precondition, all_of, converged, determined, minimum

    full_data = f"{what} (the full-data network)"
    if fit_info.get("trivial"):
        return None, Precondition(False, f"{full_data} ended at the zero network, which "
                                         f"predicts every class alike (objective {fit_info['objective']:.6g} = ln C): "
                                         "an optimum its gradient norm certifies, but not a trained network")
    if not fit_info["reached_tol"]:
        return None, converged(fit_info["grad_norm"], tol=tol, what=full_data)
    if not (curvature := minimum(smallest_eigenvalue, what=full_data)).holds:
        return None, curvature
    table = networks.leave_one_out_lsi(fitted, inputs, labels, indices, weight_decay=weight_decay, tol=tol, ids=ids,
                                       marginals={"last_layer": networks.head_parameters(fitted)},
                                       checkpoint=checkpoint, progress=progress)
    distance_bounds = table["grad_norm"].to_numpy() + fit_info["grad_norm"]
    return table, all_of(converged(table.attrs["lsi"]["max_grad_norm"], tol=tol, what=what),
                         determined(distance_bounds, smallest_eigenvalue, table["displacement"].to_numpy(),
                                    what=f"{what} left out"))


def nested_order(labels: Sequence[int], n_scored: int, *, seed: int = 0) -> np.ndarray:
    """Positions ordered so that every prefix of length >= ``n_scored`` is a nested data set.

    The first ``n_scored`` positions are a stratified random subset (the samples
    that are scored at every size); the rest follow in a seeded random order.
    """
    labels = np.asarray(labels)
    scored = stratified_positions(labels, n_scored, seed=seed)
    rest = np.setdiff1d(np.arange(len(labels)), scored)
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(scored), rng.permutation(rest)])


def lsi_vs_size(features: Any, labels: Any, sizes: Sequence[int], *, n_scored: int = 250, seeds: Sequence[int] = (0,),
                ids: Any = None, **options) -> pd.DataFrame:
    """LSI of the same ``n_scored`` samples inside nested data sets of each size in ``sizes``.

    For each seed, :func:`nested_order` fixes the scored samples and the order in
    which the others join; the data set of size n is the first n positions. Returns
    one row per (seed, size, scored sample): ``seed, n, id, label, lsi, kl_mean, kl_cov``,
    plus the run's parameter count in ``attrs["n_params"]``.
    """
    X = check_features(features)
    Y, C = check_labels(labels, len(X))
    ids = np.arange(len(X)) if ids is None else np.asarray(ids)
    sizes = sorted(int(n) for n in sizes)
    if sizes[0] < n_scored or sizes[-1] > len(X):
        raise ValueError(f"sizes must lie in [n_scored={n_scored}, {len(X)}]; got {sizes[0]}..{sizes[-1]}.")
    tables = []
    for seed in seeds:
        order = nested_order(Y, n_scored, seed=seed)
        for n in sizes:
            rows = order[:n]
            table = compute_lsi(X[rows], Y[rows], ids=ids[rows], indices=np.arange(n_scored), n_classes=C,
                                seed=seed, progress=False, **options)
            tables.append(table[["id", "label", "lsi", "kl_mean", "kl_cov"]].assign(seed=seed, n=n))
    out = pd.concat(tables, ignore_index=True)
    out.attrs["n_params"] = (X.shape[1] + 1) * C
    return out


def regime_slopes(medians: pd.DataFrame, n_params: int, *, x: str = "n", y: str = "lsi") -> dict[str, float]:
    """Slopes of log10 ``y`` against log10 ``x`` below (n <= K) and far above (n >= FAR_ABOVE K) the
    parameter count K; NaN where a regime has fewer than two sizes. A slope of -1 is LSI ~ 1/n."""
    out = {}
    for name, keep in (("below", medians[x] <= n_params), ("far_above", medians[x] >= FAR_ABOVE * n_params)):
        part = medians[keep]
        out[name] = (float(np.polyfit(np.log10(part[x]), np.log10(part[y]), 1)[0])
                     if part[x].nunique() >= 2 else float("nan"))
        out[f"{name}_sizes"] = int(part[x].nunique())
    return out


REGIMES = {"below": "at or below the parameter count (n <= K)",
           "far_above": f"far above the parameter count (n >= {FAR_ABOVE} K)"}
"""The two regimes of App. F's scaling, by :func:`regime_slopes`' names."""


def in_regime(n: Any, n_params: int, regime: str) -> np.ndarray:
    """Mask of the sizes ``n`` inside ``regime`` (:data:`REGIMES`) for a probe with ``n_params`` parameters."""
    n = np.asarray(n)
    if regime not in REGIMES:
        raise ValueError(f"regime={regime!r} is not valid; choose one of {', '.join(REGIMES)}.")
    return n <= n_params if regime == "below" else n >= FAR_ABOVE * n_params


def scaling_claims(medians: pd.DataFrame, n_params: int, *, label: str, x: str = "n", y: str = "lsi") -> list:
    """App. F's "LSI falls like 1/n", one claim row per regime (:data:`REGIMES`), judged by
    :func:`lsi.claims.scales_like` on the median LSI (``y``) of the same samples against n (``x``)
    inside the regime: as strict as a ratio, and "cannot tell" with fewer than three sizes."""
    from lsi.claims import Claim, scales_like

    rows = []
    for regime, words in REGIMES.items():
        part = medians[in_regime(medians[x], n_params, regime)]
        sizes = ", ".join(f"{int(n):,}" for n in part[x])
        rows.append(Claim(
            f"LSI falls like 1/n (App. F), {words}; {label}.",
            f"median LSI at n = {sizes or 'none'}: " + ", ".join(f"{v:.3g}" for v in part[y]) if len(part)
            else "no size of this run falls in this regime",
            scales_like(part[x], part[y], -1.0, what="the median LSI", law="1/n"), tier="converged"))
    return rows


def feature_noise_sweep(features: Any, labels: Any, target_class: int, variances: Sequence[float], *,
                        seed: int = 0, **options) -> pd.DataFrame:
    """LSI of every scored sample with ``N(0, variance)`` noise on the features of ``target_class``.

    One LSI run per variance (variance 0 is the clean set); returns the runs'
    tables stacked with a ``variance`` column and ``noisy`` (the sample's class is the target).
    """
    X = check_features(features)
    Y, _ = check_labels(labels, len(X))
    tables = []
    for variance in variances:
        noisy = corruptions.add_feature_noise(X, Y, target_class, variance, seed=seed).values
        table = compute_lsi(noisy, Y, seed=seed, progress=False, **options)
        tables.append(table.assign(variance=float(variance), noisy=table["label"].to_numpy() == target_class))
    return pd.concat(tables, ignore_index=True)


def label_flip_run(features: Any, labels: Any, fraction: float = 0.1, *, seed: int = 0, ids: Any = None,
                   **options) -> pd.DataFrame:
    """LSI with ``fraction`` of the labels flipped uniformly to another class (:func:`lsi.corruptions.flip_labels`).

    Adds ``flipped`` (bool) and ``clean_label`` to the table; ``label`` is the label trained on.
    """
    X = check_features(features)
    Y, C = check_labels(labels, len(X))
    flip = corruptions.flip_labels(Y, fraction, n_classes=C, seed=seed)
    table = compute_lsi(X, flip.values, ids=ids, seed=seed, n_classes=C, progress=False, **options)
    table["clean_label"] = Y[table["index"].to_numpy()]
    table["flipped"] = np.isin(table["index"].to_numpy(), flip.changed)
    return table


def binary_task(labels: Sequence[int], negative: Sequence[int], positive: Sequence[int], n_train: int,
                n_test: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A balanced two-class task from groups of classes: ``(train, test, binary_labels)``.

    ``train`` and ``test`` are disjoint positions into ``labels``, half from each
    group and stratified over the classes inside a group; ``binary_labels`` has
    1 for the positive group, 0 for the negative one, -1 elsewhere.
    """
    labels = np.asarray(labels)
    binary = np.full(len(labels), -1)
    binary[np.isin(labels, list(negative))] = 0
    binary[np.isin(labels, list(positive))] = 1
    picks = {"train": [], "test": []}
    for group in (0, 1):
        members = np.flatnonzero(binary == group)
        need = n_train // 2 + n_test // 2
        if len(members) < need:
            raise ValueError(f"group {group} has {len(members)} samples, {need} needed for n_train={n_train}, "
                             f"n_test={n_test}.")
        chosen = members[stratified_positions(labels[members], need, seed=seed)]
        chosen = np.random.default_rng(seed).permutation(chosen)
        picks["train"].append(chosen[:n_train // 2])
        picks["test"].append(chosen[n_train // 2:need])
    return np.sort(np.concatenate(picks["train"])), np.sort(np.concatenate(picks["test"])), binary


def probe_accuracy(train_features: Any, train_labels: Any, test_features: Any, test_labels: Any, *,
                   weight_decay: float = PAPER["weight_decay"], n_classes: int | None = None) -> dict[str, float]:
    """Train and held-out accuracy of the linear probe at its exact optimum (the objective LSI uses)."""
    X, Xt = check_features(train_features), check_features(test_features, name="test_features")
    Y, C = check_labels(train_labels, len(X), n_classes=n_classes)
    Yt, _ = check_labels(test_labels, len(Xt), n_classes=C)
    probe = LinearProbe(X.shape[1], C)
    X64, Y64 = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(Y)
    theta, _ = training.fit_optimum(probe, probe.init(0, dtype=torch.float64, device="cpu"), X64, Y64,
                                    weight_decay=weight_decay)

    def accuracy(features, labels):
        logits = probe.logits(theta[None], torch.as_tensor(features, dtype=torch.float64))[0]
        return float((logits.argmax(1).numpy() == labels).mean())

    return {"train_accuracy": accuracy(X, Y), "test_accuracy": accuracy(Xt, Yt), "n_train": len(X),
            "n_test": len(Xt)}


def median_intervals(groups: Mapping[str, Sequence[float]], *, seed: int = 0,
                     confidence: float = 0.95) -> pd.DataFrame:
    """Median and percentile-bootstrap interval of each group: columns ``group, n, median, low, high``."""
    rows = []
    for name, values in groups.items():
        low, high = bootstrap_interval(values, np.median, confidence=confidence, seed=seed)
        rows.append({"group": name, "n": len(values), "median": float(np.median(values)), "low": low, "high": high})
    return pd.DataFrame(rows)


def top_overlap(a: Sequence[float], b: Sequence[float], fraction: float = 0.1) -> float:
    """Share of the top ``fraction`` of samples by ``a`` that are also in the top ``fraction`` by ``b``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"a and b differ in shape: {a.shape} vs {b.shape}; score the same samples.")
    k = max(1, int(round(fraction * len(a))))
    top_a, top_b = set(np.argsort(-a, kind="stable")[:k]), set(np.argsort(-b, kind="stable")[:k])
    return len(top_a & top_b) / k


def aligned(tables: Mapping[str, pd.DataFrame], *, column: str = "lsi", on: str = "id") -> pd.DataFrame:
    """``column`` of each table side by side, one column per name, on the samples all tables score (rows matched
    by ``on``, not by position: runs may order or subset their samples differently). For
    :func:`compare_rankings` and scatter plots of two runs of the same samples."""
    for name, table in tables.items():
        missing = {column, on} - set(table.columns)
        if missing:
            raise ValueError(f"table {name!r} has no column {sorted(missing)}; it has {list(table.columns)}.")
        if table[on].duplicated().any():
            raise ValueError(f"table {name!r} scores some {on!r} twice; give each sample once.")
    frame = pd.concat({name: table.set_index(on)[column] for name, table in tables.items()}, axis=1, join="inner")
    if frame.empty:
        raise ValueError(f"the tables {list(tables)} share no {on!r}: they score different samples.")
    return frame


def compare_rankings(scores: Mapping[str, Sequence[float]], reference: str, *,
                     fraction: float = 0.1) -> pd.DataFrame:
    """Each score against ``scores[reference]`` on the same samples: Spearman, top-``fraction`` overlap
    (:func:`top_overlap`) and the median relative difference of the values."""
    from scipy.stats import spearmanr

    ref = np.asarray(scores[reference], float)
    rows = {}
    for name, values in scores.items():
        if name != reference:
            values = np.asarray(values, float)
            rows[name] = {"spearman": float(spearmanr(values, ref).statistic),
                          f"top {fraction:.0%} overlap": top_overlap(values, ref, fraction),
                          "median relative difference": float(np.median(np.abs(values - ref) / np.abs(ref)))}
    return pd.DataFrame(rows).T.rename_axis(f"against {reference}")


def lsi_during_training(features: Any, labels: Any, epochs: Sequence[int], **options) -> pd.DataFrame:
    """LSI of the ``gd`` tier after each training length in ``epochs`` (App. G): one long table with columns
    ``epoch`` and ``full_data_grad_norm`` (how far the full-data model is from its optimum at that length).

    The ``gd`` tier trains every model (full data and each leave-one-out) with a constant step from one
    seeded initialisation, so its state after ``e`` steps of a longer run is exactly the state of an
    ``e``-step run: each snapshot is :func:`lsi.compute_lsi` with ``solver="gd", epochs=e`` and the same
    ``options`` (``indices``, ``seed``, ``lr``, ...). The cost is ``sum(epochs)`` steps per model.
    """
    lengths = sorted({int(e) for e in epochs})
    if not lengths or lengths[0] < 1:
        raise ValueError(f"epochs == {list(epochs)!r}: give one or more training lengths >= 1.")
    if options.pop("solver", "gd") != "gd":
        raise ValueError("lsi_during_training follows the gd tier's training; leave solver unset or 'gd'.")
    snapshots = []
    for e in lengths:
        table = compute_lsi(features, labels, solver="gd", epochs=e, **options)
        snapshots.append(table.assign(epoch=e, full_data_grad_norm=table.attrs["lsi"]["full_data_grad_norm"]))
    return pd.concat(snapshots, ignore_index=True)


def settling_claims(references: Mapping[str, tuple[str, Mapping[int, float], Any]], *, probe: str) -> list:
    """App. G's claim ("after a warm-up, the ordering stays largely consistent") against each reference.

    ``references`` maps a reference's name to ``(what it is, {epoch: Spearman with it}, gate)``;
    ``gate`` is a :class:`lsi.claims.Precondition` the reference must meet (e.g.
    :func:`lsi.claims.converged` for "the converged LSI") or None. Judged by
    :func:`lsi.claims.settles`; a failed gate gives "cannot tell".
    """
    from lsi.claims import Claim, settles

    rows = []
    for name, (what, rho, gate) in references.items():
        first = min(rho)
        rows.append(Claim(
            f"After a warm-up, the ordering stays largely consistent (App. G); {probe}, against {what}.",
            f"Spearman {first} epochs: {rho[first]:.3f}; "
            + ", ".join(f"{e}: {v:.3f}" for e, v in rho.items() if e != first),
            settles(rho, what=f"the gd ranking against the {name} one", requires=[gate] if gate else []),
            tier="gd"))
    return rows


def rankings_over_training(table: pd.DataFrame, reference: pd.Series, *, fraction: float = 0.1) -> pd.DataFrame:
    """Each snapshot of :func:`lsi_during_training` against ``reference`` (LSI indexed by sample ``index``):
    Spearman, top-``fraction`` overlap and median relative difference per ``epoch`` (:func:`compare_rankings`)."""
    rows = {}
    for epoch, snapshot in table.groupby("epoch"):
        scores = snapshot.set_index("index")["lsi"]
        missing = scores.index.difference(reference.index)
        if len(missing):
            raise ValueError(f"the reference has no LSI for samples {missing[:5].tolist()}; score the same samples.")
        ref = reference.loc[scores.index].to_numpy()
        rows[epoch] = compare_rankings({"snapshot": scores.to_numpy(), "reference": ref},
                                       reference="reference", fraction=fraction).iloc[0]
    return pd.DataFrame(rows).T.rename_axis("epoch")


def lsi_with_notes(features: Any, labels: Any, **options) -> tuple[pd.DataFrame, list[str]]:
    """:func:`lsi.compute_lsi`, with the ``RuntimeWarning`` messages it raises returned as notes for a page
    instead of printed (e.g. a ``warm-start`` whose full-data model stopped above ``tol/10``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        table = compute_lsi(features, labels, **options)
    return table, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def score_probes(features: Any, labels: Any, probes: Mapping[str, Mapping[str, Any]]
                 ) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """LSI of ``(features, labels)`` under each named :func:`lsi.compute_lsi` configuration in ``probes``.

    Returns ``(scores, reasons)``: the table of every configuration that ran, and for each one whose
    solver does not apply here (:class:`lsi.training.SolverDoesNotApply`, e.g. the converged tier on a
    non-convex MLP whose optimum it cannot certify) the solver's own explanation instead.
    """
    scores, reasons = {}, {}
    for name, options in probes.items():
        try:
            scores[name] = compute_lsi(features, labels, **options)
        except training.SolverDoesNotApply as error:
            reasons[name] = str(error)
    return scores, reasons


def slope_words(slope: float) -> str:
    """A log-log slope of LSI against n in words, against the 1/n law (slope -1), as strictly as
    :func:`lsi.claims.scales_like`: the change per tenfold n, ``10**slope``, within the claims' ratio
    tolerance (:data:`lsi.claims.RATIO_TOLERANCE`) of 1/10 is "about 1/n" (slopes -0.82 to -1.18);
    otherwise "flatter than 1/n", "steeper than 1/n" or, for a non-negative slope, "not falling with n"."""
    from lsi.claims import RATIO_TOLERANCE

    if np.isnan(slope):
        return "not measured (fewer than two sizes in this regime)"
    if slope >= 0:
        return "not falling with n"
    factor = 10 ** -slope / 10  # the change per decade relative to 1/n's tenfold
    if 1 / RATIO_TOLERANCE <= factor <= RATIO_TOLERANCE:
        return "about 1/n"
    return "flatter than 1/n" if factor < 1 / RATIO_TOLERANCE else "steeper than 1/n"


def lsi_subsets(scores: Sequence[float], labels: Sequence[int], *, seed: int = 0) -> dict[str, np.ndarray]:
    """Positions of three equal, class-stratified subsets by LSI order within each class, and a random one.

    For a class with ``n_c`` samples sorted by increasing score and ``k = n_c // 3``:
    ``"low"`` takes the first ``k``, ``"mid"`` the next ``k``, ``"high"`` the last ``k``
    (with ``n_c = 3k + r`` the ``r`` samples just above the middle third are left
    out, so the subsets have the same size and class balance); ``"random"`` draws
    ``k`` of the class uniformly (``np.random.default_rng(seed)``), the chance baseline
    of the same size. Ties keep their input order (stable sort). Positions are sorted.
    """
    scores, labels = np.asarray(scores, float), np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in shape: {scores.shape} vs {labels.shape}; "
                         f"pass one score per labelled sample.")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"low": [], "mid": [], "high": [], "random": []}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order, k = members[np.argsort(scores[members], kind="stable")], len(members) // 3
        parts["low"].append(order[:k])
        parts["mid"].append(order[k:2 * k])
        parts["high"].append(order[len(order) - k:])
        parts["random"].append(rng.choice(members, size=k, replace=False))
    return {name: np.sort(np.concatenate(chosen)) for name, chosen in parts.items()}


SUBSETS = ("low", "mid", "high", "random")
"""The subsets of :func:`lsi_subsets`, in the order the learnability tables and claims use."""


def learnability(scores: Sequence[float], labels: Sequence[int], *, features: Any, pixels: Any, test_features: Any,
                 test_pixels: Any, test_labels: Sequence[int], models: Sequence[str], seeds: Sequence[int] = (0,),
                 widths: Mapping[str, Any] | None = None, weight_decay: float = PAPER["weight_decay"],
                 device: str | torch.device = RUN["device"], draw: float = 1.0, **training_options: Any) -> pd.DataFrame:
    """Train and test accuracy of each model trained on each LSI subset, for each seed (Figs. 8-9, App. J).

    For every seed, a stratified share ``draw`` of the samples is drawn with that seed
    (:func:`lsi.data.stratified_positions`; all of them when ``draw`` is 1) and :func:`lsi_subsets`
    splits the drawn samples by per-class order of ``scores`` into ``low``, ``mid`` and ``high``
    thirds, plus a ``random`` subset of the same size drawn with that seed. The seed thus varies
    what a replicate really varies: the training samples drawn and the networks' initialisation.
    Each model in ``models`` is trained on each subset:

    * ``"probe"``: the linear probe on ``features`` at its exact optimum (:func:`probe_accuracy`,
      ``weight_decay``); it has no random state, so with ``draw`` = 1 every seed gives it the same
      low/mid/high numbers (identical replicates: :func:`replicates_differ` says so);
    * any :mod:`lsi.networks` name: that network on ``pixels`` (:func:`lsi.networks.train_and_evaluate`,
      built and batched from the seed, width ``widths[name]`` if given, ``weight_decay`` and the
      ``training_options``: ``epochs``, ``batch_size``, ``lr``, ``momentum``).

    Train accuracy is measured on the subset itself (the learnability of the subset), test accuracy
    on ``test_features`` / ``test_pixels``. Returns one row per model, subset and seed: ``model,
    subset, seed, n, train_accuracy, test_accuracy, gap`` (train minus test) and ``wall_time_s``.
    """
    labels, test_labels, scores = np.asarray(labels), np.asarray(test_labels), np.asarray(scores, float)
    if not 0 < draw <= 1:
        raise ValueError(f"draw == {draw}: the share of the samples each seed draws must be in (0, 1].")
    n_classes, widths, rows = int(max(labels.max(), test_labels.max())) + 1, dict(widths or {}), []
    for seed in seeds:
        pool = (np.arange(len(labels)) if draw == 1 else
                np.sort(stratified_positions(labels, int(round(draw * len(labels))), seed=seed)))
        for subset, local in lsi_subsets(scores[pool], labels[pool], seed=seed).items():
            positions = pool[local]
            for model in models:
                rows.append({"model": model, "subset": subset, "seed": seed, "n": len(positions),
                             **_train_one(model, positions, labels, features, pixels, test_features, test_pixels,
                                          test_labels, n_classes=n_classes, seed=seed, width=widths.get(model),
                                          weight_decay=weight_decay, device=device, **training_options)})
    table = pd.DataFrame(rows)
    return table.assign(gap=table["train_accuracy"] - table["test_accuracy"])


def _train_one(model: str, positions: np.ndarray, labels: np.ndarray, features: Any, pixels: Any,
               test_features: Any, test_pixels: Any, test_labels: np.ndarray, *, n_classes: int, seed: int,
               width: Any, weight_decay: float, device: str | torch.device, **training_options: Any) -> dict:
    """One row of :func:`learnability`: the probe on features, or a network on pixels."""
    if model == "probe":
        start = time.perf_counter()
        found = probe_accuracy(np.asarray(features)[positions], labels[positions], test_features, test_labels,
                               weight_decay=weight_decay, n_classes=n_classes)
        return {"train_accuracy": found["train_accuracy"], "test_accuracy": found["test_accuracy"],
                "wall_time_s": time.perf_counter() - start}
    return networks.train_and_evaluate(model, np.asarray(pixels)[positions], labels[positions], test_pixels,
                                       test_labels, n_classes=n_classes, width=width, seed=seed,
                                       weight_decay=weight_decay, device=device, **training_options)


def by_subset(runs: pd.DataFrame, model: str, column: str) -> dict[str, np.ndarray]:
    """``column`` of ``model``'s rows of a :func:`learnability` table per subset (one value per seed, in
    seed order), subsets in the order of :data:`SUBSETS`."""
    rows = runs[runs["model"] == model].sort_values("seed")
    if rows.empty:
        raise ValueError(f"model={model!r} has no runs; the table holds {sorted(runs['model'].unique())}.")
    return {subset: rows.loc[rows["subset"] == subset, column].to_numpy(float) for subset in SUBSETS}


def replicates_differ(runs: pd.DataFrame, model: str, column: str, subsets: Sequence[str] = ("low", "mid", "high")):
    """:func:`lsi.claims.independent` of ``model``'s seeds: one replicate per seed, its ``column`` on the
    ``subsets`` a claim compares. Identical replicates (the probe on the LSI thirds with ``draw`` = 1,
    whatever the seed) give a failed precondition."""
    from lsi.claims import independent

    rows = runs[runs["model"] == model].pivot(index="seed", columns="subset", values=column)
    return independent(list(rows[list(subsets)].to_numpy()), what=f"seeds of the {model} on {', '.join(subsets)}")


def seed_intervals(runs: pd.DataFrame, columns: Sequence[str] = ("train_accuracy", "test_accuracy", "gap"), *,
                   seed: int = 0) -> pd.DataFrame:
    """Median over the seeds of each ``column`` per model and subset, with its percentile-bootstrap interval
    (:func:`median_intervals`): columns ``model, subset, metric, n, median, low, high``."""
    parts = []
    for model in runs["model"].unique():
        for column in columns:
            found = median_intervals(by_subset(runs, model, column), seed=seed).rename(columns={"group": "subset"})
            parts.append(found.assign(model=model, metric=column))
    return pd.concat(parts, ignore_index=True)[["model", "subset", "metric", "n", "median", "low", "high"]]


def learnability_cost(models: Sequence[str], *, widths: Mapping[str, Any] | None = None, n_subset: int,
                      n_test: int, epochs: int, runs: int, tflops: float) -> pd.DataFrame:
    """Floating-point cost of :func:`learnability`'s network trainings, and the time at ``tflops``.

    Per run: ``epochs`` passes over ``n_subset`` images at about three forward passes each (forward
    and a backward of twice its cost), then one forward pass over the ``n_subset`` training and the
    ``n_test`` test images: ``F (3 epochs n_subset + n_subset + n_test)`` with ``F`` the network's
    :func:`lsi.networks.forward_flops`; ``runs`` runs per model (subsets x seeds). The probe's cost is
    negligible beside them and not counted. Columns ``forward_gflop, total_pflop, hours``.
    """
    widths, rows = dict(widths or {}), {}
    for model in models:
        forward = networks.forward_flops(networks.build(model, width=widths.get(model), device="meta"))
        total = forward * (3 * epochs * n_subset + n_subset + n_test) * runs
        rows[model] = {"forward_gflop": forward / 1e9, "total_pflop": total / 1e15,
                       "hours": total / (tflops * 1e12) / 3600}
    return pd.DataFrame(rows).T.rename_axis("model")
