"""SUI on a linearised pretrained network: the experiments of the ``sui_pretrained`` chapter.

All take the fine-tuned part of the network (:class:`lsi.sui.pretrained.Tail`)
and the frozen trunk's activations, so the expensive trunk runs once.

* :func:`stable_lr` - the gradient-descent step ``fraction / lambda_max(Theta)``.
* :func:`projection_study` - SUI with the Jacobian projected to several
  dimensions, each ranked against the largest (Spearman).
* :func:`finetuning_check` - SUI against really fine-tuning the tail without each
  sample, from the same pretrained start with the same steps.
* :func:`information_over_time` - weight and functional SI of the same samples
  at several training times ``t``, and their Spearman at each.
* :func:`fine_tune` - the tail trained on all samples (real network).
* :func:`source_table` / :func:`adversarial_scores` / :func:`detection_over_time` -
  per-source and adversarial-vs-clean summaries of SUI and LSI, and the AUROC over ``t``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from lsi.stats import agreement, separation
from lsi.data import stratified_positions

from lsi.sui.api import compute_sui_linearized
from lsi.sui.linearize import Linearization, linearize
from lsi.sui.reference import loo_network_gd, retraining_information, train_network_gd

MEASURES = ("sui_weight", "sui_functional")


def stable_lr(jac: torch.Tensor, fraction: float = 1.0) -> float:
    """``fraction / lambda_max(J J^T)``: gradient descent on the summed squared error is
    stable for ``lr < 2 / lambda_max``; ``fraction = 1`` is the usual safe choice."""
    return fraction / float(torch.linalg.eigvalsh(jac @ jac.T)[-1])


def one_hot(labels: Sequence[int], k: int = 2) -> torch.Tensor:
    """One-hot regression targets (n, k) in float64."""
    return torch.tensor(np.eye(k)[np.asarray(labels)], dtype=torch.float64)


def projection_study(tail: torch.nn.Module, inputs: torch.Tensor, labels: np.ndarray,
                     heldout: torch.Tensor, dims: Sequence[int], *, t: float, lr_fraction: float = 1.0,
                     projection: str = "sparse", seed: int = 0, batch_size: int = 32
                     ) -> tuple[pd.DataFrame, dict[int, tuple[Linearization, Linearization]]]:
    """SUI at training time ``t`` with the Jacobian projected to each of ``dims``, ranked against the largest.

    The step is ``lr = lr_fraction / lambda_max`` of the largest projection's kernel,
    the same for every dimension; no L2. Returns the table (index: projection
    dimension; one Spearman column per measure, against the largest dimension) and
    the linearisations (train, heldout) per dimension; ``attrs`` hold ``lr``, the
    ``reference`` dimension and the SUI tables (``scores``).
    """
    options = dict(projection=projection, seed=seed, batch_size=batch_size)
    lins = {dim: (linearize(tail, inputs, projection_dim=dim, **options),
                  linearize(tail, heldout, projection_dim=dim, **options)) for dim in sorted(dims)}
    top = max(dims)
    lr = stable_lr(lins[top][0].jac, lr_fraction)
    scores = {dim: compute_sui_linearized(train, labels, heldout=held, t=t, lr=lr, l2=0.0, progress=False)
              for dim, (train, held) in lins.items()}
    table = pd.DataFrame({m: {dim: agreement(scores[dim][m], scores[top][m])["spearman"] for dim in lins}
                          for m in MEASURES})
    table.index.name = "projection dim"
    table.attrs.update(lr=lr, reference=top, scores=scores)
    return table, lins


def finetuning_check(tail: torch.nn.Module, inputs: torch.Tensor, labels: np.ndarray, heldout: torch.Tensor, *,
                     n_train: int, n_loo: int, steps: int, projection_dim: int, projection: str = "sparse",
                     lr_fraction: float = 1.0, seed: int = 0, chunk: int = 16) -> pd.DataFrame:
    """SUI of ``n_loo`` samples of an ``n_train`` subset against real leave-one-out fine-tuning.

    Both train the tail from the same pretrained ``w0`` with ``steps`` gradient-descent
    steps of the same ``lr`` on the summed squared error, without L2: SUI in closed
    form on the linearised (projected) tail, the truth by training the real tail
    once on the subset and once without each scored sample
    (:func:`lsi.sui.reference.loo_network_gd`). Columns ``sui_*`` and ``real_*``;
    ``attrs["lr"]``.
    """
    subset = stratified_positions(labels, n_train, seed=seed)
    scored = np.sort(np.random.default_rng(seed).choice(len(subset), n_loo, replace=False))
    x, y = inputs[subset], labels[subset]
    options = dict(projection_dim=projection_dim, projection=projection, seed=seed)
    train, held = linearize(tail, x, **options), linearize(tail, heldout, **options)
    lr = stable_lr(train.jac, lr_fraction)
    table = compute_sui_linearized(train, y, heldout=held, t=steps, lr=lr, l2=0.0, indices=scored,
                                   progress=False)
    truth = loo_network_gd(tail, x, one_hot(y), scored, lr=lr, steps=steps, eval_inputs=heldout, chunk=chunk)
    real = retraining_information(truth)
    table["real_weight"], table["real_functional"] = real["weight"], real["functional"]
    table.attrs["lr"] = lr
    return table


def approximation_table(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman, relative errors etc. of ``sui_weight``/``sui_functional`` against ``real_*``."""
    return pd.DataFrame({f"{m} SI": agreement(table[f"sui_{m}"], table[f"real_{m}"])
                         for m in ("weight", "functional")}).T


def information_over_time(train: Linearization, labels: np.ndarray, heldout: Linearization,
                          times: Sequence[float], *, lr: float, indices: np.ndarray, l2: float = 0.0
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Weight and functional SI of the samples ``indices`` at each training time ``t`` (steps of ``lr``).

    Returns the long table (one row per sample and ``t``) and one row per ``t``
    with both medians and ``Spearman(weight, functional)`` across the samples.
    """
    long = pd.concat([compute_sui_linearized(train, labels, heldout=heldout, t=t, lr=lr, l2=l2,
                                             indices=indices, progress=False).assign(t=t) for t in times])
    summary = long.groupby("t").apply(lambda g: pd.Series({
        "median weight SI": g["sui_weight"].median(), "median functional SI": g["sui_functional"].median(),
        "Spearman(weight, functional)": agreement(g["sui_functional"], g["sui_weight"])["spearman"]}),
        include_groups=False).reset_index()
    return long, summary


def fine_tune(tail: torch.nn.Module, inputs: torch.Tensor, labels: np.ndarray, *, lr: float,
              steps: int) -> torch.Tensor:
    """Flat weights of the real tail after ``steps`` GD steps on all samples (summed squared error)."""
    masks = torch.ones(1, len(inputs), dtype=torch.float64)
    return train_network_gd(tail, inputs, one_hot(labels), masks, lr=lr, steps=steps)["weights"][0]


def source_table(scores: Mapping[str, pd.DataFrame | pd.Series], groups: np.ndarray) -> pd.DataFrame:
    """Median of every score column per source (``groups`` names each sample's source)."""
    frame = pd.DataFrame({name: np.asarray(values) for name, values in scores.items()})
    return frame.assign(source=groups).groupby("source").median().assign(
        samples=pd.Series(groups).value_counts())


def detection_over_time(train: Linearization, labels: np.ndarray, heldout: Linearization,
                        times: Sequence[float], positive: np.ndarray, *, lr: float, l2: float = 0.0
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """AUROC of weight and functional SI for flagging ``positive`` samples at each training time ``t``.

    Returns one row per ``t`` and the SUI table of the last ``t``.
    """
    rows, table = [], None
    for t in times:
        table = compute_sui_linearized(train, labels, heldout=heldout, t=t, lr=lr, l2=l2, progress=False)
        rows.append({"t": t, **{f"AUROC {m}": separation(table[m], positive)["auroc"] for m in MEASURES}})
    return pd.DataFrame(rows), table


def adversarial_scores(scores: Mapping[str, Sequence[float]], is_adversarial: np.ndarray) -> pd.DataFrame:
    """AUROC and related separation numbers of each score for flagging the adversarial samples."""
    return pd.DataFrame({name: separation(values, is_adversarial) for name, values in scores.items()}).T
