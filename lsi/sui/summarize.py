"""Data summarisation by unique information: which samples to drop first.

The SUI paper (and its code) ranks samples greedily: compute SI on the current
training set, remove the least informative 5% of it, recompute on what is
left, and repeat. Recomputing matters, because removing a sample changes how
unique its near-duplicates are.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lsi.validation import check_features, check_labels, check_positive

from .api import compute_sui


def removal_order(features: Any, labels: Any, *, step: float = 0.05, until: float = 0.95,
                  score: str = "sui_functional", progress: bool = True,
                  **sui_options: Any) -> np.ndarray:
    """Sample positions in the order they are removed, least informative first.

    Each round scores the remaining samples with :func:`compute_sui` (``sui_options``
    are passed on; ``heldout`` stays fixed), removes ``ceil(step * remaining)``
    of the lowest ``score``, and stops once a fraction ``until`` is removed; the
    samples still left are appended in increasing score of the last round.
    """
    features = check_features(features)
    labels, _ = check_labels(labels, len(features))
    step, until = check_positive(step, name="step"), check_positive(until, name="until")
    if step >= 1 or until >= 1:
        raise ValueError(f"step == {step} and until == {until} must both be < 1 (fractions).")
    remaining, removed = np.arange(len(features)), []
    bar = tqdm(total=int(until * len(features)), desc="summarisation", disable=not progress)
    while True:
        table = compute_sui(features[remaining], labels[remaining], progress=False, **sui_options)
        ranked = remaining[table.sort_values(score, kind="stable")["index"].to_numpy()]
        count = int(np.ceil(step * len(remaining)))
        if len(removed) + count > until * len(features) or len(np.unique(labels[ranked[count:]])) < 2:
            return np.concatenate(removed + [ranked]).astype(np.int64)
        removed.append(ranked[:count])
        remaining = np.sort(ranked[count:])
        bar.update(count)


def summarisation_curve(features: Any, labels: Any, test_features: Any, test_labels: Any, *,
                        fractions: Sequence[float], step: float = 0.05, repeats: int = 3,
                        train_steps: int = 300, probe: str = "mlp", hidden: int = 16, seed: int = 0,
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

    Returns one row per (strategy, repeat, fraction): ``test accuracy`` and
    ``largest class share`` among the kept samples (removal is not stratified).
    """
    import torch

    from lsi.analysis import accuracy

    from .api import FlatProbe
    from .linearize import linearize
    from .reference import train_network_gd

    features = check_features(features)
    labels, n_classes = check_labels(labels, len(features))
    test_features = np.asarray(test_features, dtype=np.float64)
    options = {"probe": probe, "hidden": hidden, "seed": seed, **sui_options, "progress": False}
    ranking = removal_order(features, labels, step=step, until=max(fractions), heldout=test_features,
                            **options)
    rng = np.random.default_rng(seed)
    orders = [("lowest SUI first", 0, ranking)] + [("random", r, rng.permutation(len(labels)))
                                                    for r in range(repeats)]
    keys, masks = [], []
    for strategy, repeat, order in orders:
        for fraction in fractions:
            mask = np.ones(len(labels))
            mask[order[:int(round(fraction * len(labels)))]] = 0.0
            keys.append((strategy, repeat, float(fraction)))
            masks.append(mask)
    network = FlatProbe(probe, features.shape[1], n_classes, hidden, seed)
    jac = linearize(network, torch.tensor(features)).jac
    lr = 1.0 / float(torch.linalg.eigvalsh(jac @ jac.T)[-1])
    trained = train_network_gd(network, torch.tensor(features), torch.tensor(np.eye(n_classes)[labels]),
                               torch.tensor(np.array(masks)), lr=lr, steps=train_steps,
                               eval_inputs=torch.tensor(test_features), chunk=64)
    table = pd.DataFrame(keys, columns=["strategy", "repeat", "fraction removed"])
    table["test accuracy"] = [accuracy(p.numpy(), test_labels) for p in trained["predictions"]]
    table["largest class share"] = [float(np.bincount(labels[m > 0], minlength=n_classes).max() / (m > 0).sum())
                                    for m in masks]
    table.attrs["lr"] = lr
    return table
