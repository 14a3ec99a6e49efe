"""LSI among its peers: every informativeness score through one interface.

:func:`scores` computes, for the same features, labels and linear probe, one
column per method. Every column is oriented so that **higher means "more likely
mislabelled / more informative"**; where a package's own score runs the other
way, the column is its negative (or complement) and ``attrs["lsi"]["raw_sign"]``
says so, so the package's value is ``raw_sign * column``.

================  ===================================================================
method            column (higher = ...)
================  ===================================================================
``lsi``           LSI in nats, the tier of ``solver`` (or ``lsi:<tier>``, e.g.
                  ``lsi:newton-step``): more information about the weights.
``loss``          cross-entropy of the sample under the full-data probe: worse fit.
``self_influence`` ``g_i^T H^-1 g_i`` (gradient of the sample's loss, ``H`` the mean-form
                  Hessian of the full-data objective): larger effect of up-weighting
                  the sample on its own loss.
``cleanlab``      ``1 - cleanlab.rank.get_label_quality_scores`` (self-confidence) on
                  out-of-fold probabilities of the same probe: lower label quality.
``knn_shapley``,  pyDVL's; **left out**: no pyDVL release runs with numpy >= 2 (see
``loo``           :data:`PYDVL_UNAVAILABLE`). Asking for them raises an ImportError.
``sui``           smooth unique information of the same linear probe (:mod:`lsi.sui`,
                  ``sui_weight``): more unique information.
``trak``          minus the TRAK attribution of the sample averaged over the targets
                  (the test set given, else the other training samples; a sample's
                  score on itself is left out, it would dominate): the sample pushes
                  the targets' margins down, as a wrong label does. Raw TRAK = -column.
``psmi``          minus pointwise sliced mutual information (the ``psmi`` package) of
                  the sample's features and label: atypical of its class. Raw PSMI =
                  -column.
================  ===================================================================

:func:`detection` turns a table and a mask of known-wrong labels into AUROC,
average precision and precision at k (k = number of wrong labels) per method,
with optional bootstrap intervals; ``lsi compare`` prints and writes it.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from lsi import runner, training
from lsi.defaults import COMPARE, LSI, PAPER, RUN
from lsi.enums import Solver
from lsi.probes import make_probe
from lsi.validation import check_features, check_labels, check_mask

METHODS = ("lsi", "loss", "self_influence", "cleanlab", "knn_shapley", "loo", "sui", "trak", "psmi")
"""Method names accepted by :func:`scores`; ``lsi:<tier>`` selects an LSI tier explicitly."""

EXTRAS = {"cleanlab": ("cleanlab", "baselines"), "trak": ("trak", "baselines"), "psmi": ("psmi", "baselines")}
"""Method -> (module it imports, extra of ``lsi`` that installs it)."""

PYDVL_UNAVAILABLE = (
    "pyDVL cannot be installed next to numpy 2.4 and torch 2.14: pyDVL 0.10.0 requires numpy<2 and "
    "pyDVL 0.9.2 fails on import (np.float_ was removed in numpy 2), so it is left out of the "
    "'baselines' extra and the knn_shapley and loo methods are unavailable.")

RAW_SIGN = {"lsi": 1, "loss": 1, "self_influence": 1, "cleanlab": -1, "sui": 1, "trak": -1, "psmi": -1}
"""Sign relating each column to the package's own score (cleanlab: column = 1 - quality)."""


def _require(method: str):
    if method in ("knn_shapley", "loo"):
        raise ImportError(f"method {method!r}: {PYDVL_UNAVAILABLE}")
    module, extra = EXTRAS[method]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"method {method!r} needs the {module!r} package: "
                          f"pip install 'laplace-sample-information[{extra}]'") from None


def parse_methods(methods: str | Sequence[str]) -> list[str]:
    """Check method names (a list or ``"a,b,c"``); unknown names list the valid ones."""
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    if not names or not all(names):
        raise ValueError("methods is empty; name at least one of " + ", ".join(METHODS) + ".")
    tiers = [s.value for s in Solver]
    for name in names:
        base, _, tier = name.partition(":")
        if base not in METHODS or (tier and (base != "lsi" or tier not in tiers)):
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)} "
                             f"(LSI tiers: {', '.join('lsi:' + t for t in tiers)}).")
    if len(set(names)) != len(names):
        raise ValueError(f"methods lists a name twice: {names}.")
    return names


class _Fit:
    """The full-data linear probe shared by loss, self-influence, TRAK (float64, converged)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, C: int, weight_decay: float, seed: int):
        self.X, self.Y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y)
        self.probe = make_probe("linear", X.shape[1], C)
        self.weight_decay = weight_decay
        theta0 = self.probe.init(seed, dtype=torch.float64, device="cpu")
        self.theta, _ = training.fit_optimum(self.probe, theta0, self.X, self.Y,
                                             weight_decay=weight_decay, tol=1e-12)
        self._factor = None

    def loss(self, rows: np.ndarray) -> np.ndarray:
        """Cross-entropy of the samples ``rows`` under the full-data probe."""
        return self.probe.ce(self.theta[None], self.X[rows], self.Y[rows])[0].numpy()

    def self_influence(self, rows: np.ndarray) -> np.ndarray:
        """``g_i^T H^-1 g_i`` of the samples ``rows`` (``H`` factorised once, at the first call)."""
        if self._factor is None:
            n = len(self.X)
            H = self.probe.hessian(self.theta, self.X, self.Y, torch.ones(n, dtype=torch.float64)) / n
            H.diagonal().add_(self.weight_decay)
            self._factor = torch.linalg.cholesky(H)
        G = self.probe.per_sample_grads(self.theta, self.X[rows], self.Y[rows])
        solved = torch.cholesky_solve(G.T, self._factor).T
        return (G * solved).sum(1).numpy()

    def layer(self) -> torch.nn.Linear:
        d, C = self.X.shape[1], self.probe.n_classes
        W = self.theta.view(d + 1, C)
        layer = torch.nn.Linear(d, C)
        with torch.no_grad():
            layer.weight.copy_(W[:d].T)
            layer.bias.copy_(W[d])
        return layer


def _cleanlab(X, y, C, weight_decay, seed, folds) -> np.ndarray:
    _require("cleanlab")
    rank = importlib.import_module("cleanlab.rank")
    probs = np.zeros((len(y), C))
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        fit = _Fit(X[train], y[train], C, weight_decay, seed)
        probs[held] = fit.probe.probabilities(fit.theta[None], torch.as_tensor(X[held]))[0].numpy()
    return 1.0 - rank.get_label_quality_scores(y, probs, method="self_confidence")


def _trak_rank(n: int, d: int, C: int) -> int:
    """Rank of TRAK's kernel ``Phi^T Phi`` for a linear probe: at most ``min(n, (d+1)(C-1))``.

    TRAK's output function is the margin ``z_y - log sum_{c != y} exp z_c``; its derivatives with
    respect to the C logits sum to zero, so every gradient lies in a ``(d+1)(C-1)``-dimensional
    subspace of the ``(d+1)C`` weights. Projected to more dimensions than this rank, the kernel is
    singular and traker's inverse of it is rounding noise: half the coordinates for a binary task
    (which is why TRAK scored at chance on the binary settings), a tenth for ten classes.
    Projected to exactly the rank, TRAK equals its exact form with the pseudo-inverse.
    """
    return min(n, (d + 1) * (C - 1))


def _trak(fit: _Fit, test_X, test_y, proj_dim: int, seed: int) -> tuple[np.ndarray, str]:
    trak = _require("trak")
    from trak.projectors import BasicProjector, ProjectionType
    layer = fit.layer().float()
    grad_dim = sum(p.numel() for p in layer.parameters())
    proj_dim = min(proj_dim, _trak_rank(len(fit.X), fit.X.shape[1], fit.probe.n_classes))
    # at least two blocks: traker 0.3.2's BasicProjector frees a single-block matrix in
    # finalize_features and never rebuilds it for scoring (AttributeError: proj_matrix)
    projector = BasicProjector(grad_dim=grad_dim, proj_dim=proj_dim, seed=seed, block_size=max(1, min(100, proj_dim // 2)),
                               proj_type=ProjectionType.rademacher, device="cpu", dtype=torch.float32)
    X = fit.X.float()
    Xt = X if test_X is None else torch.as_tensor(np.asarray(test_X), dtype=torch.float32)
    Yt = fit.Y if test_y is None else torch.as_tensor(np.asarray(test_y))
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stderr(io.StringIO()):  # traker's bars
        traker = trak.TRAKer(model=layer, task="image_classification", train_set_size=len(X), save_dir=folder,
                             device="cpu", projector=projector, proj_dim=proj_dim, use_half_precision=False,
                             logging_level=40)
        traker.load_checkpoint(layer.state_dict(), model_id=0)
        for s in range(0, len(X), 256):
            traker.featurize(batch=(X[s:s + 256], fit.Y[s:s + 256]), num_samples=len(X[s:s + 256]))
        traker.finalize_features()
        traker.start_scoring_checkpoint(exp_name="targets", checkpoint=layer.state_dict(), model_id=0,
                                        num_targets=len(Xt))
        for s in range(0, len(Xt), 256):
            traker.score(batch=(Xt[s:s + 256], Yt[s:s + 256]), num_samples=len(Xt[s:s + 256]))
        attribution = np.asarray(traker.finalize_scores(exp_name="targets"), dtype=np.float64)
    projector_name = f"{type(projector).__name__} (rademacher, {proj_dim} dims, one checkpoint)"
    if test_X is None:  # training samples as targets: leave each sample's score on itself out
        np.fill_diagonal(attribution, 0.0)
        return -attribution.sum(axis=1) / (len(X) - 1), projector_name
    return -attribution.mean(axis=1), projector_name


def _psmi(X, y, n_estimators: int, seed: int) -> np.ndarray:
    psmi = _require("psmi")
    state = np.random.get_state()
    try:
        np.random.seed(seed)  # the package draws its directions from numpy's global generator
        mean, _, _ = psmi.PSMI(n_estimators=n_estimators).fit_transform(X, y)
    finally:
        np.random.set_state(state)
    return -np.asarray(mean, dtype=np.float64)


class _Context:
    """What the methods of one :func:`scores` call share: the data, the options, the full-data probe and the
    columns of the methods that score the whole set at once (computed at the first chunk that needs them)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, C: int, options: dict, test_features: Any, test_labels: Any,
                 progress: bool):
        self.X, self.y, self.C, self.o = X, y, C, options
        self.test_features, self.test_labels, self.progress = test_features, test_labels, progress
        self.columns: dict[str, np.ndarray] = {}
        self.walls: dict[str, float] = {}
        self.extra: dict[str, str] = {}
        self._fit, self.fit_s = None, 0.0

    @property
    def fit(self) -> _Fit:
        """The full-data linear probe, fitted once (its time is :attr:`fit_s`)."""
        if self._fit is None:
            started = time.perf_counter()
            self._fit = _Fit(self.X, self.y, self.C, self.o["weight_decay"], self.o["seed"])
            self.fit_s = time.perf_counter() - started
        return self._fit

    def whole(self, name: str, compute) -> np.ndarray:
        """The column ``name`` of the whole set, from ``compute()`` at its first use."""
        if name not in self.columns:
            self.columns[name] = np.asarray(compute(), dtype=np.float64)
        return self.columns[name]


def _lsi(ctx: _Context, name: str, chunk: np.ndarray) -> np.ndarray:
    from lsi.api import compute_lsi
    o = ctx.o
    tier = name.partition(":")[2] or o["solver"]
    return ctx.whole(name, lambda: compute_lsi(
        ctx.X, ctx.y, solver=tier, hessian=o["hessian"], weight_decay=o["weight_decay"], seed=o["seed"], tol=o["tol"],
        epochs=o["epochs"], lr=o["lr"], momentum=o["momentum"], progress=ctx.progress)["lsi"])[chunk]


def _loss(ctx: _Context, name: str, chunk: np.ndarray) -> np.ndarray:
    return ctx.fit.loss(chunk)


def _self_influence(ctx: _Context, name: str, chunk: np.ndarray) -> np.ndarray:
    return ctx.fit.self_influence(chunk)


def _cleanlab_column(ctx: _Context, name: str, chunk: np.ndarray) -> np.ndarray:
    o = ctx.o
    return ctx.whole(name, lambda: _cleanlab(ctx.X, ctx.y, ctx.C, o["weight_decay"], o["seed"], o["folds"]))[chunk]


def _sui(ctx: _Context, name: str, chunk: np.ndarray) -> np.ndarray:
    from lsi.sui import compute_sui_features
    return ctx.whole(name, lambda: compute_sui_features(ctx.X, ctx.y, probe="linear", l2=ctx.o["sui_l2"],
                                                        seed=ctx.o["seed"], progress=ctx.progress)["sui_weight"])[chunk]


def _trak_column(ctx: _Context, name: str, chunk: np.ndarray) -> np.ndarray:
    def compute():
        column, ctx.extra["trak_projector"] = _trak(ctx.fit, ctx.test_features, ctx.test_labels,
                                                    ctx.o["trak_proj_dim"], ctx.o["seed"])
        return column
    return ctx.whole(name, compute)[chunk]


def _psmi_column(ctx: _Context, name: str, chunk: np.ndarray) -> np.ndarray:
    return ctx.whole(name, lambda: _psmi(ctx.X, ctx.y, ctx.o["psmi_estimators"], ctx.o["seed"]))[chunk]


REGISTRY = {"lsi": _lsi, "loss": _loss, "self_influence": _self_influence, "cleanlab": _cleanlab_column,
            "sui": _sui, "trak": _trak_column, "psmi": _psmi_column}
"""Method -> ``(context, name, chunk) -> column values at the chunk's positions``. ``loss`` and
``self_influence`` work chunk by chunk from the shared full-data probe; the others score the whole set
at their first chunk (their packages take the whole set) and hand out its slices."""

USES_FIT = ("loss", "self_influence", "trak")
"""Methods that need the shared full-data probe; each is charged its fit time, as if it ran alone."""


def scores(features: Any, labels: Any, methods: str | Sequence[str] = ("lsi", "loss"), *,
           solver: str = LSI["solver"], hessian: str = LSI["hessian"], weight_decay: float = PAPER["weight_decay"],
           seed: int = PAPER["seed"], tol: float = LSI["tol"], epochs: int = PAPER["epochs"], lr: float = PAPER["lr"],
           momentum: float = PAPER["momentum"], folds: int = COMPARE["folds"], sui_l2: float = COMPARE["sui_l2"],
           trak_proj_dim: int = COMPARE["trak_proj_dim"], test_features: Any = None, test_labels: Any = None,
           psmi_estimators: int = COMPARE["psmi_estimators"], memory_budget: str | int = RUN["memory_budget"],
           checkpoint: str | Path | None = None, progress: bool = False,
           executor: runner.Executor | None = None) -> pd.DataFrame:
    """One column per method, one row per sample, all from the same features, labels and probe.

    Every column is oriented "higher = more likely mislabelled / more
    informative" (module docstring). The probe is the linear probe of
    :func:`lsi.compute_lsi` with weight decay ``weight_decay`` on all parameters,
    fitted to convergence in float64 (``loss``, ``self_influence``, ``trak``,
    and each ``cleanlab`` fold).

    Options: ``solver``/``hessian``/``tol``/``epochs``/``lr``/``momentum`` for
    ``lsi``; ``folds`` for ``cleanlab``; ``sui_l2`` for ``sui``; ``trak_proj_dim``
    and the targets ``test_features``/``test_labels`` (default: the training
    set) for ``trak``; ``psmi_estimators`` (random directions) for ``psmi``.

    The samples go through :func:`lsi.runner.run` (chunks that fit
    ``memory_budget``; ``checkpoint`` resumes a killed run): each method of
    :data:`REGISTRY` gives its column at a chunk's positions. ``attrs["lsi"]`` is
    the runner's provenance plus ``methods``, ``raw_sign``,
    ``method_wall_time_s`` (per method, this process's time; each includes the
    full-data fit the method needs, as if it ran alone) and, for TRAK, the
    projector that ran.
    """
    names = parse_methods(methods)
    for name in names:  # fail before any work if a package is missing
        if name.split(":")[0] in EXTRAS or name in ("knn_shapley", "loo"):
            _require(name)
    started = runner.start("cpu")
    X = check_features(features)
    y, C = check_labels(labels, len(X))
    options = dict(methods=names, solver=solver, hessian=hessian, weight_decay=weight_decay, seed=seed, tol=tol,
                   epochs=epochs, lr=lr, momentum=momentum, folds=folds, sui_l2=sui_l2, trak_proj_dim=trak_proj_dim,
                   trak_targets="training set" if test_features is None else f"{len(test_features)} test samples",
                   psmi_estimators=psmi_estimators)
    context = _Context(X, y, C, options, test_features, test_labels, progress)

    def score(chunk: np.ndarray, bar=None) -> pd.DataFrame:
        columns = {"index": chunk}
        for name in names:
            base, begun, fit_before = name.split(":")[0], time.perf_counter(), context.fit_s
            columns[name] = REGISTRY[base](context, name, chunk)
            spent = time.perf_counter() - begun - (context.fit_s - fit_before)  # the fit is charged below
            context.walls[name] = context.walls.get(name, 0.0) + spent
        return pd.DataFrame(columns)

    identity = runner.run_identity("compare", options, data=runner.fingerprint(X, y, test_features, test_labels))
    per_sample = 8 * (3 * (X.shape[1] + 1) * C + C)   # self-influence: a gradient, its solve and the product
    table = runner.run(np.arange(len(X)), score, size=runner.chunk_size(per_sample, memory_budget),
                       identity=identity, checkpoint=checkpoint, progress=progress, desc="compare",
                       executor=executor).drop(columns="index")
    walls = {name: round(wall + (context.fit_s if name.split(":")[0] in USES_FIT else 0.0), 3)
             for name, wall in context.walls.items()}
    table.attrs["lsi"] = runner.provenance(
        started, identity=identity, options={**options, "memory_budget": memory_budget}, n_samples=len(X),
        n_scored=len(table), methods=names, method_wall_time_s=walls,
        raw_sign={n: RAW_SIGN[n.split(":")[0]] for n in names}, n_features=X.shape[1], n_classes=C,
        **context.extra)
    return table


def precision_at_k(score: np.ndarray, positive: np.ndarray, k: int | None = None) -> float:
    """Share of known-wrong labels among the ``k`` highest scores (``k`` = number of them)."""
    k = int(positive.sum()) if k is None else int(k)
    top = np.argsort(-np.asarray(score, float), kind="stable")[:k]
    return float(positive[top].mean())


def detection(table: pd.DataFrame, flipped: Any, *, bootstrap: int = 0, confidence: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """How well each column of ``table`` finds the known-wrong labels ``flipped``.

    One row per method: ``auroc``, ``average_precision``, ``precision_at_k``
    (k = number flipped), ``k`` and ``wall_time_s`` (``attrs["lsi"]["method_wall_time_s"]``);
    with ``bootstrap`` > 0 resamples, percentile intervals ``*_low``/``*_high``
    of AUROC and AP (samples resampled with replacement, seeded).
    """
    positive = check_mask(flipped, len(table))
    walls = table.attrs.get("lsi", {}).get("method_wall_time_s", {})
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(table), len(table)) for _ in range(bootstrap)]
    draws = [d for d in draws if 0 < positive[d].sum() < len(d)]
    rows = []
    for name in table.columns:
        s = table[name].to_numpy(float)
        row = {"method": name, "auroc": roc_auc_score(positive, s),
               "average_precision": average_precision_score(positive, s),
               "precision_at_k": precision_at_k(s, positive), "k": int(positive.sum()),
               "wall_time_s": walls.get(name, np.nan)}
        if draws:
            tail = (1 - confidence) / 2
            for key, metric in (("auroc", roc_auc_score), ("average_precision", average_precision_score)):
                values = [metric(positive[d], s[d]) for d in draws]
                row[f"{key}_low"], row[f"{key}_high"] = np.quantile(values, [tail, 1 - tail])
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def covariance_effect(table: pd.DataFrame, wrong: Any = None) -> dict[str, float]:
    """What LSI's covariance term changes: LSI against its mean term alone (``kl_mean``).

    ``table`` is :func:`lsi.compute_lsi` output. Returns the Spearman of the two
    rankings, the share of the top-k samples they share (k = 10% of the samples,
    or the number of wrong labels when ``wrong`` is given), the median share of
    LSI held by the covariance term, and with ``wrong`` the AUROC of each.
    """
    full, mean = table["lsi"].to_numpy(float), table["kl_mean"].to_numpy(float)
    k = max(1, int(round(0.1 * len(full)))) if wrong is None else int(np.sum(wrong))
    top = set(np.argsort(-full, kind="stable")[:k]) & set(np.argsort(-mean, kind="stable")[:k])
    found = {"spearman": float(pd.Series(full).corr(pd.Series(mean), method="spearman")),
             "top_k": k, "top_k_shared": len(top) / k,
             "median_cov_share": float(np.median(table["kl_cov"].to_numpy(float) / full))}
    if wrong is not None:
        positive = check_mask(wrong, len(full))
        found["auroc_lsi"] = float(roc_auc_score(positive, full))
        found["auroc_mean_term_only"] = float(roc_auc_score(positive, mean))
    return found


def raw(table: pd.DataFrame) -> pd.DataFrame:
    """Columns back in each package's own sign (``raw_sign * column``): PSMI and TRAK as published.

    (cleanlab's quality is ``1 - column``; its raw column here is ``-column``,
    which ranks the same.)"""
    signs = table.attrs["lsi"]["raw_sign"]
    return pd.DataFrame({name: signs[name] * table[name] for name in table.columns})


def paired_differences(table: pd.DataFrame, wrong: Any, first: str, second: str, *, bootstrap: int = 1000,
                       seed: int = 0, metric: str = "auroc") -> np.ndarray:
    """Bootstrap draws of ``metric(first) - metric(second)``, both on the same resample each time.

    ``metric`` is ``"auroc"`` or ``"average_precision"``; feed the draws to
    :func:`lsi.claims.beats`.
    """
    positive = check_mask(wrong, len(table))
    score = {"auroc": roc_auc_score, "average_precision": average_precision_score}[metric]
    a, b = table[first].to_numpy(float), table[second].to_numpy(float)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        d = rng.integers(0, len(a), len(a))
        if 0 < positive[d].sum() < len(d):
            draws.append(score(positive[d], a[d]) - score(positive[d], b[d]))
    return np.asarray(draws)
