"""Data summarisation by unique information: which samples to drop first.

The SUI paper (and its code) ranks samples greedily: compute SI on the current
training set, remove the least informative 5% of it, recompute on what is
left, and repeat. Recomputing matters, because removing a sample changes how
unique its near-duplicates are.

Options to take the experiment apart: ``stratified`` removes the same fraction
of every class in each round (the paper's removal is not stratified);
``largest_first`` removes the most informative samples first (a control);
``score`` picks weight or functional SI; ``step`` sets the greedy schedule
(``step >= until``: one shot, no recomputation).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lsi.defaults import SUI
from lsi.enums import Probe
from lsi.validation import check_choice, check_features, check_labels, check_positive

from .api import FlatProbe, compute_sui_linearized
from .linearize import Linearization, linearize


def _round_removal(ranked: np.ndarray, labels: np.ndarray, count: int, stratified: bool) -> np.ndarray:
    """The first ``count`` of ``ranked``; with ``stratified``, the first ``count_c`` of each class
    ``c`` (kept in rank order), ``count_c`` proportional to the class's share of ``ranked``
    and summing to ``count`` (largest remainders; ties to the lower class)."""
    if not stratified:
        return ranked[:count]
    classes, sizes = np.unique(labels[ranked], return_counts=True)
    quota = count * sizes / len(ranked)
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[:count - take.sum()]] += 1
    chosen = np.zeros(len(ranked), dtype=bool)
    for c, k in zip(classes, take):
        chosen[np.flatnonzero(labels[ranked] == c)[:k]] = True
    return ranked[chosen]


def removal_order(features: Any, labels: Any, *, step: float = 0.05, until: float = 0.95,
                  score: str = "sui_functional", stratified: bool = False, largest_first: bool = False,
                  probe: str = SUI["probe"], hidden: int = SUI["hidden"], seed: int = SUI["seed"],
                  heldout: Any = None, device: str = SUI["device"], progress: bool = True,
                  linearized: Linearization | None = None, **sui_options: Any) -> np.ndarray:
    """Sample positions in the order they are removed, least informative first.

    Each round scores the remaining samples with SUI (what :func:`compute_sui`
    gives on them; ``sui_options`` such as ``l2``, ``t``, ``lr`` are passed on,
    ``heldout`` stays fixed), removes ``ceil(step * remaining)`` of the lowest
    ``score`` (the highest with ``largest_first``; per class in proportion with
    ``stratified``), and stops once a fraction ``until`` is removed; the samples
    still left are appended in score order of the last round.

    The probe (``probe``, ``hidden``, seeded initialisation ``seed``) is the same
    in every round, so its Jacobian on all samples and on ``heldout`` is computed
    once and each round takes the rows of the samples left
    (:meth:`~lsi.sui.Linearization.take`). A caller that already has it on
    ``features`` passes it as ``linearized``.
    """
    features = check_features(features)
    labels, n_classes = check_labels(labels, len(features))
    step, until = check_positive(step, name="step"), check_positive(until, name="until")
    if step >= 1 or until >= 1:
        raise ValueError(f"step == {step} and until == {until} must both be < 1 (fractions).")
    model = FlatProbe(check_choice(probe, Probe, name="probe").value, features.shape[1], n_classes, hidden, seed)
    train = linearized if linearized is not None else linearize(model, torch.from_numpy(features), device=device)
    if train.jac.shape[0] != len(features) * n_classes:
        raise ValueError(f"linearized has {train.jac.shape[0]} Jacobian rows; the probe on {len(features)} samples "
                         f"of {n_classes} classes has {len(features) * n_classes}. Linearise it on these features.")
    held = None if heldout is None else linearize(model, torch.from_numpy(check_features(heldout, name="heldout")),
                                                  device=device)
    remaining, removed = np.arange(len(features)), []
    bar = tqdm(total=int(until * len(features)), desc="summarisation", disable=not progress)
    while True:
        table = compute_sui_linearized(train.take(remaining), labels[remaining], heldout=held, device=device,
                                       progress=False, **sui_options)
        ranked = remaining[table.sort_values(score, ascending=not largest_first, kind="stable")["index"].to_numpy()]
        drop = _round_removal(ranked, labels, int(np.ceil(step * len(remaining))), stratified)
        done = sum(len(r) for r in removed)
        rest = ranked[~np.isin(ranked, drop)]
        if done + len(drop) > until * len(features) or len(np.unique(labels[rest])) < 2:
            return np.concatenate(removed + [ranked]).astype(np.int64)
        removed.append(drop)
        remaining = np.sort(rest)
        bar.update(len(drop))


def summarisation_curve(features: Any, labels: Any, test_features: Any, test_labels: Any, *,
                        fractions: Sequence[float], step: float = 0.05, repeats: int = 3,
                        train_steps: int = 300, probe: str = "mlp", hidden: int = 16, seed: int = 0,
                        ranking: np.ndarray | None = None, score: str = "sui_functional",
                        stratified: bool = False, largest_first: bool = False,
                        **sui_options: Any) -> pd.DataFrame:
    """Test accuracy after removing training samples, least informative first vs at random.

    The SUI paper's data-summarisation experiment. The SUI order is
    :func:`removal_order` (greedy, ``step`` per round, functional SI); the
    baseline is ``repeats`` seeded random orders. For every order and every
    fraction in ``fractions`` the first ``round(fraction * n)`` samples are
    removed and the real probe (``probe``, ``hidden``, initialised from ``seed``)
    is retrained from its initialisation with ``train_steps`` full-batch GD
    steps of squared error, step ``1 / lambda_max(Theta)`` (the largest stable
    step for the full set); all subsets train together
    (:func:`lsi.sui.reference.train_network_gd`).

    ``score``, ``stratified`` and ``largest_first`` are those of
    :func:`removal_order`; a precomputed ``ranking`` (e.g. ``attrs["ranking"]`` of
    an earlier call) skips it, to retrain the same order differently.

    Returns one row per (strategy, repeat, fraction): ``test accuracy`` and
    ``largest class share`` among the kept samples (unless ``stratified``, removal
    is not stratified); ``attrs`` hold ``lr`` and the SUI ``ranking``.
    """
    from lsi.stats import accuracy

    from .reference import train_network_gd

    features = check_features(features)
    labels, n_classes = check_labels(labels, len(features))
    test_features = np.asarray(test_features, dtype=np.float64)
    options = {"probe": probe, "hidden": hidden, "seed": seed, **sui_options, "progress": False}
    network = FlatProbe(probe, features.shape[1], n_classes, hidden, seed)
    train = linearize(network, torch.tensor(features), device=sui_options.get("device", SUI["device"]))
    if ranking is None:
        ranking = removal_order(features, labels, step=step, until=max(fractions), heldout=test_features,
                                score=score, stratified=stratified, largest_first=largest_first,
                                linearized=train, **options)
    rng = np.random.default_rng(seed)
    name = "highest SUI first" if largest_first else "lowest SUI first"
    orders = [(name, 0, ranking)] + [("random", r, rng.permutation(len(labels)))
                                                    for r in range(repeats)]
    keys, masks = [], []
    for strategy, repeat, order in orders:
        for fraction in fractions:
            mask = np.ones(len(labels))
            mask[order[:int(round(fraction * len(labels)))]] = 0.0
            keys.append((strategy, repeat, float(fraction)))
            masks.append(mask)
    lr = 1.0 / float(torch.linalg.eigvalsh(train.jac @ train.jac.T).max().cpu())
    trained = train_network_gd(network, torch.tensor(features), torch.tensor(np.eye(n_classes)[labels]),
                               torch.tensor(np.array(masks)), lr=lr, steps=train_steps,
                               eval_inputs=torch.tensor(test_features), chunk=64)
    table = pd.DataFrame(keys, columns=["strategy", "repeat", "fraction removed"])
    table["test accuracy"] = [accuracy(p.numpy(), test_labels) for p in trained["predictions"]]
    table["largest class share"] = [float(np.bincount(labels[m > 0], minlength=n_classes).max() / (m > 0).sum())
                                    for m in masks]
    table.attrs["lr"] = lr
    table.attrs["ranking"] = ranking
    return table


def summarisation_variants(features: Any, labels: Any, test_features: Any, test_labels: Any,
                           variants: dict[str, dict[str, Any]], **common: Any) -> pd.DataFrame:
    """:func:`summarisation_curve` once per variant, stacked with a ``variant`` column.

    Each variant's options override ``common``; ``{"reuse": name, ...}`` retrains the
    ranking of an earlier variant ``name`` (for example with other ``train_steps``)
    instead of recomputing it. ``attrs["rankings"]`` holds each variant's removal order.
    """
    tables, rankings = [], {}
    for name, options in variants.items():
        options = dict(options)
        reuse = options.pop("reuse", None)
        if reuse is not None:
            options["ranking"] = rankings[reuse]
        table = summarisation_curve(features, labels, test_features, test_labels, **{**common, **options})
        rankings[name] = table.attrs["ranking"]
        table.attrs = {}
        tables.append(table.assign(variant=name))
    out = pd.concat(tables, ignore_index=True)
    out.attrs["rankings"] = rankings
    return out
