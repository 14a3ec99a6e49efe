"""Input validation at the package boundary.

Every public entry point (``compute_lsi``, ``compute_sui``, the CLI) runs its
inputs through these checks once; inner code trusts what they return. Messages
follow scikit-learn's pattern: what was expected, what was given, how to fix it.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


class NonFiniteError(ArithmeticError):
    """A computation produced NaN or inf: training diverged, or float32 lost the precision it needed.

    Raised on purpose (never a table of NaN, never an endless loop), with the
    samples concerned and the likely cause in the message; the CLI reports it as
    ``error: ...`` with exit 2.
    """


def _as_numpy(array: Any, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    try:
        return np.asarray(array)
    except Exception as error:  # pragma: no cover - numpy's own message is kept
        raise TypeError(f"{name} could not be converted to an array: {error}") from error


def check_features(features: Any, *, name: str = "features") -> np.ndarray:
    """Return ``features`` as a finite 2-D float array of shape (n, d)."""
    array = _as_numpy(features, name)
    if array.ndim != 2:
        raise ValueError(
            f"Expected {name} as a 2-D array of shape (n_samples, n_features), "
            f"got an array of shape {array.shape}. Reshape it, e.g. x.reshape(len(x), -1)."
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples); LSI needs at least two samples.")
    if array.shape[1] == 0:
        raise ValueError(f"{name} has 0 feature columns.")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise TypeError(f"Expected real numeric {name}, got dtype {array.dtype}.")
    array = array.astype(np.float64, copy=False)
    bad = ~np.isfinite(array)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"{name} contains NaN or inf in {len(rows)} row(s), first at rows "
            f"{rows[:5].tolist()}. Drop or impute these rows before computing LSI."
        )
    return array


def check_labels(labels: Any, n_samples: int, *, n_classes: int | None = None,
                 name: str = "labels") -> tuple[np.ndarray, int]:
    """Return integer labels of length ``n_samples`` and the number of classes.

    Labels must be integers in ``0..C-1``; ``C`` defaults to ``max(label) + 1``.
    At least two classes must be present, since a one-class probe has no
    information to measure.
    """
    array = _as_numpy(labels, name)
    if array.ndim != 1:
        raise ValueError(f"Expected {name} as a 1-D array, got shape {array.shape}.")
    if len(array) != n_samples:
        raise ValueError(
            f"features and {name} have different lengths: {n_samples} rows of features "
            f"but {len(array)} {name}. They must describe the same samples."
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(
                f"Expected integer class {name}, got non-integer values such as "
                f"{array[array != np.round(array)][:3].tolist()}. Encode classes as 0..C-1."
            )
    elif array.dtype.kind not in "iub":
        raise TypeError(
            f"Expected integer class {name}, got dtype {array.dtype}. "
            f"Encode classes as 0..C-1, e.g. with sklearn.preprocessing.LabelEncoder."
        )
    array = array.astype(np.int64)
    if array.min() < 0:
        raise ValueError(f"{name} must be >= 0, got {array.min()}. Encode classes as 0..C-1.")
    classes = int(array.max()) + 1 if n_classes is None else int(n_classes)
    if array.max() >= classes:
        raise ValueError(f"{name} must be < n_classes={classes}, got {array.max()}.")
    if len(np.unique(array)) < 2:
        raise ValueError(
            f"{name} contain a single class ({array[0]}); LSI needs at least two classes."
        )
    return array, classes


def check_indices(indices: Iterable[int] | slice | str | None, n_samples: int) -> np.ndarray:
    """Return the sample positions to score, sorted and unique.

    Accepts ``None`` (all), a ``slice``, a string ``"a:b"`` as on the command
    line, or an iterable of integers.
    """
    if indices is None:
        return np.arange(n_samples)
    if isinstance(indices, str):
        indices = parse_index_range(indices)
    if isinstance(indices, slice):
        start = 0 if indices.start is None else indices.start
        stop = n_samples if indices.stop is None else indices.stop
        if not (0 <= start < stop <= n_samples):
            raise ValueError(
                f"indices {start}:{stop} are out of range for {n_samples} samples; "
                f"use a range within 0:{n_samples}."
            )
        return np.arange(start, stop)
    array = np.asarray(list(indices), dtype=np.int64)
    if array.size == 0:
        raise ValueError("indices is empty; pass at least one sample position to score.")
    if array.min() < 0 or array.max() >= n_samples:
        raise ValueError(
            f"indices must lie in 0..{n_samples - 1}, got values from {array.min()} "
            f"to {array.max()}."
        )
    return np.unique(array)


def parse_index_range(text: str) -> slice:
    """Parse ``"a:b"`` (either end may be empty) into a slice."""
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError(f"indices must look like 'a:b' (e.g. 0:500), got {text!r}.")
    try:
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise ValueError(f"indices must look like 'a:b' with integers, got {text!r}.") from None
    return slice(start, stop)


def check_mask(mask: Any, n_samples: int, *, name: str = "flipped") -> np.ndarray:
    """A boolean mask of known-wrong labels, length ``n_samples``, with both values present."""
    array = np.asarray(mask)
    if array.ndim != 1 or len(array) != n_samples:
        raise ValueError(f"Expected {name} as a 1-D boolean mask of length {n_samples}, got shape {array.shape}.")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"Expected {name} as a boolean mask (True = wrong label), got values such as "
                             f"{np.unique(array)[:3].tolist()}.")
        array = array.astype(bool)
    if array.all() or not array.any():
        raise ValueError(f"{name} marks {'every' if array.all() else 'no'} sample; AUROC needs both "
                         f"wrong and correct labels.")
    return array


def check_choice(value: Any, enum: type, *, name: str) -> Any:
    """Return ``enum(value)`` or raise a ValueError that lists the valid options."""
    try:
        return enum(value)
    except ValueError:
        valid = ", ".join(repr(member.value) for member in enum)
        raise ValueError(f"{name}={value!r} is not valid; choose one of {valid}.") from None


def check_positive(value: float, *, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is finite and > 0 (or >= 0)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}.") from None
    ok = number >= 0 if allow_zero else number > 0
    if not np.isfinite(number) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} == {value}, must be {bound}.")
    return number
