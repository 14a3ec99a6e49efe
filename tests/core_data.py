"""Small deterministic problems for the core tests."""
from __future__ import annotations

import numpy as np

from lsi.data import digits_pixels


def digits_subset(n: int, *, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random (fixed-seed) subset of the embedded digits (:func:`lsi.data.digits_pixels`, in [0, 1])."""
    X, y, _ = digits_pixels()
    keep = y < classes
    X, y = X[keep], y[keep]
    rows = np.random.default_rng(seed).choice(len(y), size=n, replace=False)
    return X[rows], y[rows]


def blobs(n: int, d: int, classes: int, *, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: overlapping classes so no sample is trivially separable."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(size=(classes, d))
    return centres[y] + spread * rng.normal(size=(n, d)), y
