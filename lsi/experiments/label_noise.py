"""Label-error settings for the chapters: noisy data sets, the peer scores on them, TRAK next to LSI.

* :class:`NoisySet` and :func:`noisy_set` - one setting: probe inputs, the labels a method sees, and
  which of them are wrong (uniform flips or CIFAR-10N human labels);
* :func:`detect` - :func:`lsi.compare.scores` of every method on a setting and its detection table;
* :func:`class_positions`, :func:`load_features` - the subsets and projections the
  chapters use;
* :func:`trak_and_lsi` - the paper's App. B: each training sample's LSI beside its mean TRAK score;
* :func:`load_benchmark` - a benchmark result (JSON) that a chapter reads;
* :func:`noise_table` and :func:`noise_claims` - Fig. 5 and App. E on scored runs with randomly flipped and with
  human labels: the separation of the corrupted samples, and the two claims judged.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lsi.compare import detection, scores
from lsi.defaults import COMPARE, LSI, PAPER
from lsi.stats import principal_projection, separation

@dataclass
class NoisySet:
    """One label-error setting: probe inputs, the labels a method sees, and which of them are wrong."""

    name: str
    features: np.ndarray
    labels: np.ndarray
    wrong: np.ndarray
    ids: np.ndarray
    positions: np.ndarray
    """Rows of the feature set the samples come from (for images and texts)."""
    noise: str


def noisy_set(name: str, features: Any, *, noise: str = "flip:0.1", n: int | None = None,
              feature_dim: int = 0, seed: int = 0) -> NoisySet:
    """A setting for label-error detection from a :class:`lsi.features.FeatureSet` with clean labels.

    A stratified random ``n`` of its samples (all if None, seeded), the top
    ``feature_dim`` principal components (0: all features), and the labels
    corrupted by ``noise``: ``"flip:<fraction>"`` (uniform flips to another
    class, seeded) or ``"human:<label set>"`` (CIFAR-10N human labels; the ids
    must be CIFAR-10 training indices). ``wrong`` marks labels that differ from
    the clean ones.
    """
    from lsi.stats import principal_components
    from lsi.corruptions import flip_labels, human_labels
    from lsi.data import stratified_positions

    labels = np.asarray(features.labels)
    positions = np.arange(len(labels)) if n is None else stratified_positions(labels, n, seed=seed)
    kind, _, value = noise.partition(":")
    if kind == "flip":
        corrupted = flip_labels(labels[positions], float(value or 0.1), n_classes=len(features.classes), seed=seed)
    elif kind == "human":
        corrupted = human_labels(np.asarray(features.ids)[positions], value or "aggre")
    else:
        raise ValueError(f"noise={noise!r} is not valid; use 'flip:<fraction>' or 'human:<label set>'.")
    wrong = np.zeros(len(positions), bool)
    wrong[corrupted.changed] = True
    X = np.asarray(features.features, dtype=np.float64)[positions]
    return NoisySet(name, principal_components(X, feature_dim), np.asarray(corrupted.values), wrong,
                    np.asarray(features.ids)[positions], positions, noise)


def detect(setting: NoisySet, methods: str | Sequence[str], *, bootstrap: int = 1000, seed: int = 0,
           **options: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`scores` of every method on ``setting`` and the :func:`detection` table with
    bootstrap intervals; the table gains the setting's name, size and noise rate."""
    table = scores(setting.features, setting.labels, methods, seed=seed, **options)
    summary = detection(table, setting.wrong, bootstrap=bootstrap, seed=seed)
    summary.insert(0, "setting", setting.name)
    summary["n"], summary["noise_rate"] = len(setting.labels), float(setting.wrong.mean())
    return table, summary


def class_positions(labels: Any, classes: Sequence[int], n: int | None = None, *,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``labels`` in ``classes`` (a stratified random ``n`` of them, seeded) and their
    labels renumbered 0..len(classes)-1 in the order given."""
    from lsi.data import stratified_positions

    labels = np.asarray(labels)
    pool = np.flatnonzero(np.isin(labels, list(classes)))
    if not len(pool):
        raise ValueError(f"no samples of classes {list(classes)}.")
    if n is not None:
        pool = pool[stratified_positions(labels[pool], n, seed=seed)]
    return pool, _renumber(labels[pool], classes)


def _renumber(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    lookup = {int(c): i for i, c in enumerate(classes)}
    return np.array([lookup[int(v)] for v in labels], dtype=np.int64)


def load_features(dataset: str, **options: Any):
    """:func:`lsi.features.extract_features` of ``dataset``, or ``(None, reason)`` when its data
    are not available here: returns ``(feature_set, None)`` or ``(None, message)``."""
    from lsi.data import SourceUnavailableError
    from lsi.features import extract_features

    try:
        return extract_features(dataset, **options), None
    except SourceUnavailableError as error:
        return None, f"{dataset} is not available on this machine, so this part is skipped: {error}"


def trak_and_lsi(train: Any, test: Any, *, n: int | None = None, n_test: int | None = None, feature_dim: int = 0,
                 solver: str = LSI["solver"], trak_proj_dim: int = COMPARE["trak_proj_dim"],
                 seed: int = PAPER["seed"]) -> pd.DataFrame:
    """The paper's App. B: LSI of each training sample next to its TRAK score averaged over a test set.

    ``train`` and ``test`` are feature sets (:class:`lsi.features.FeatureSet`);
    stratified random ``n`` and ``n_test`` of them (seeded, all if None), both
    on the top ``feature_dim`` principal components of the training features.
    Columns ``index`` (row of ``train``), ``id``, ``label``, ``lsi`` and ``trak``,
    the **raw** mean TRAK attribution (positive: the sample helps the test
    predictions); ``attrs["lsi"]`` is that of :func:`scores`.
    """
    from lsi.data import stratified_positions

    rows = np.arange(len(train.labels)) if n is None else stratified_positions(train.labels, n, seed=seed)
    targets = np.arange(len(test.labels)) if n_test is None else stratified_positions(test.labels, n_test, seed=seed)
    X, T = principal_projection(train.features[rows], test.features[targets], feature_dim)
    table = scores(X, train.labels[rows], [f"lsi:{solver}", "trak"], trak_proj_dim=trak_proj_dim, seed=seed,
                   test_features=T, test_labels=test.labels[targets])
    frame = pd.DataFrame({"index": rows, "id": np.asarray(train.ids)[rows], "label": train.labels[rows],
                          "lsi": table[f"lsi:{solver}"].to_numpy(), "trak": -table["trak"].to_numpy()})
    frame.attrs["lsi"] = {**table.attrs["lsi"], "n_test": len(targets)}
    return frame


def load_benchmark(path: str | Path) -> tuple[dict | None, str | None]:
    """A benchmark result written by a script in ``benchmarks/`` (JSON), or ``(None, reason)``."""
    path = Path(path)
    if not path.is_file():
        return None, (f"{path} is not there: run the benchmark script that writes it (see its docstring) "
                      f"through the heavy-job queue, then rerun this chapter.")
    return json.loads(path.read_text()), None


FLIPS, HUMAN = "random flips", "human labels (aggre)"
NOISE_KINDS = (FLIPS, HUMAN)
"""The two kinds of label noise of Fig. 5 and App. E: the keys of the runs :func:`noise_table` and
:func:`noise_claims` take."""


def _by_kind(runs: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``runs`` in the order of :data:`NOISE_KINDS`; an unknown kind is a ``ValueError``."""
    unknown = set(runs) - set(NOISE_KINDS)
    if unknown:
        raise ValueError(f"unknown noise kind(s) {sorted(unknown)}; the kinds are {list(NOISE_KINDS)}")
    return {kind: runs[kind] for kind in NOISE_KINDS if kind in runs}


def noise_table(runs: Mapping[str, Mapping[str, pd.DataFrame]]) -> pd.DataFrame:
    """:func:`lsi.stats.separation` of the corrupted samples of each run, one row per ``(setting, noise kind)``.

    ``runs`` maps a setting (e.g. a probe) to its scored runs by noise kind (keys from :data:`NOISE_KINDS`; a kind
    not run is left out), each with the columns ``lsi`` and ``corrupted`` (a published table); the noise rate is
    ``n_positive / n``.
    """
    table = pd.DataFrame({(setting, kind): separation(run["lsi"], run["corrupted"])
                          for setting, by_kind in runs.items() for kind, run in _by_kind(by_kind).items()}).T
    table["noise rate"] = table["n_positive"] / (table["n_positive"] + table["n_negative"])
    return table


def noise_claims(runs: Mapping[str, pd.DataFrame], *, where: str, tier: str = "converged",
                 seed: int = 0) -> list:
    """Fig. 5 and App. E judged on scored runs of the same images, by noise kind (keys from :data:`NOISE_KINDS`).

    Fig. 5, from the random flips: the flipped samples separate from the rest (:func:`lsi.claims.separates`, some
    above every clean one). App. E, from both kinds: the medians order clean < human mislabels < random flips
    (:func:`lsi.claims.ordered`, with bootstrap intervals), the medians the rule judges shown beside each run's
    ratio to its own correct labels (the two can disagree: random flips raise every sample's LSI in their run).
    A claim whose runs are not given is not made.
    ``where`` names the setting in the claim text.
    """
    from lsi.claims import Claim, ordered, separates

    runs = _by_kind(runs)
    if FLIPS not in runs:
        return []
    found = noise_table({where: runs}).loc[where]
    flips, flipped = runs[FLIPS], found.loc[FLIPS]
    made = [Claim(
        f"Mislabelled samples have substantially higher LSI; some exceed every correct one (Fig. 5): {where}.",
        f"median flipped/clean = {flipped['median_ratio']:.3g}x, AUROC {flipped['auroc']:.3f}, "
        f"{flipped['above_max_negative']:.1%} of flipped above the highest clean ({len(flips):,} samples)",
        separates(flips["lsi"], flips["corrupted"], what="flipped labels", above_all=True), tier=tier)]
    if HUMAN in runs:
        human, mislabelled = runs[HUMAN], found.loc[HUMAN]
        made.append(Claim(
            f"Human mislabels raise LSI, but less than random flips (App. E): {where}.",
            f"median LSI: correct labels {mislabelled['median_negative']:.3g}, human mislabels "
            f"{mislabelled['median_positive']:.3g}, random flips {flipped['median_positive']:.3g}; ratio to the "
            f"correct labels of their own run: human {mislabelled['median_ratio']:.3g}x, flips "
            f"{flipped['median_ratio']:.3g}x ({len(human):,} samples)",
            ordered({"the correctly labelled samples": human.loc[~human["corrupted"], "lsi"],
                     "the human mislabels": human.loc[human["corrupted"], "lsi"],
                     "the random flips": flips.loc[flips["corrupted"], "lsi"]}, seed=seed), tier=tier))
    return made
