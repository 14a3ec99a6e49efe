"""What a test needs from the machine: a missing prerequisite skips the test here and fails it under ``CI=1``.

CI (``.ci/run``) provides every prerequisite: the data mirrors (``LSI_DATA``), Debian's Chromium and
poppler-utils, and the extras (curvature, cluster, book, test). A skip there would hide an untested path
and leave CI green, so :func:`require` turns it into a failure. Every test that skips for a missing
prerequisite goes through this module.

The one documented exception: a CUDA device. No machine here, CI included, has one, so CUDA-only tests
(:data:`needs_cuda`) skip everywhere.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Mapping

import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device (the one prerequisite CI does not provide either)")


def require(available: object, reason: str, *, environ: Mapping[str, str] | None = None,
            module_level: bool = False) -> None:
    """Nothing if ``available`` is truthy; else skip the test, or fail it when ``CI`` is set.

    ``reason`` says what is missing and how to get it; ``module_level`` skips a whole test file.
    """
    if available:
        return
    if (os.environ if environ is None else environ).get("CI"):
        pytest.fail(f"CI is set but {reason}; .ci/run provides it.", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


def require_module(name: str, install: str, *, module_level: bool = False) -> ModuleType | None:
    """``import name``, or :func:`require` fails/skips with the ``install`` hint
    (e.g. ``pip install -e '.[curvature]'``)."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        require(False, f"{name} is not installed ({error}; {install})", module_level=module_level)


def require_mirrors() -> Path:
    """The offline data mirrors, ``$LSI_DATA`` (see /work/shared/data/README.md)."""
    root = os.environ.get("LSI_DATA")
    require(root and Path(root).is_dir(), f"the offline data mirrors are not available (LSI_DATA={root!r})")
    return Path(root)
