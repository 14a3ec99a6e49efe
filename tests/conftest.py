"""Fixtures shared by several test files."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from core_data import blobs
from prerequisites import require_mirrors

CI_JOBS = min(2, os.cpu_count() or 1)
"""Chapters the ``ci_book`` fixture executes at once (``lsi.book.run_chapters``): on two cores, two chapters
with one thread each overlap their kernels' start-up and single-threaded work."""


@pytest.fixture(autouse=True)
def no_leftover_torch_state():
    """Every test leaves torch's thread count and default dtype as it found them (the library restores what it
    changes; a test that changes them restores them too)."""
    before = torch.get_num_threads(), torch.get_default_dtype()
    yield
    after = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(before[0])  # restored first, so that one leak fails one test, not every later one
    torch.set_default_dtype(before[1])
    assert after == before, f"torch (threads, default dtype) changed from {before} to {after} and was not restored"


@pytest.fixture
def mirrors() -> Path:
    """The offline data mirrors ``$LSI_DATA``: skip without them here, fail under ``CI=1`` (tests/prerequisites.py)."""
    return require_mirrors()


@pytest.fixture
def features_file(tmp_path) -> Path:
    """40 samples of three 3-d blobs as ``lsi compute --features`` reads them: an ``.npz`` of features and labels."""
    X, y = blobs(40, 3, 3)
    path = tmp_path / "F.npz"
    np.savez(path, features=X, labels=y)
    return path


@dataclass
class CiBook:
    """Every chapter executed at the ``ci`` profile, and the site built from them."""

    chapters: dict
    reports: list
    chapters_dir: Path
    site: Path          # build folder: site/html, site/source/_toc.yml (restricted), site/build.log
    html: Path | None   # None when a chapter failed (nothing is built then)


@pytest.fixture(scope="session")
def ci_book(tmp_path_factory) -> CiBook:
    """The chapters at ``ci`` and the book built from them, once per test session.

    Shared by ``tests/book/test_book.py`` (no error cells, the site builds) and
    ``tests/book/test_pdf.py`` (the printable book), so that the chapters run only
    once. ``LSI_CI_CHAPTERS=<dir>`` reuses notebooks executed at ``ci`` before
    (``<dir>/<chapter>.ipynb``) instead of running them.
    """
    from lsi import book

    chapters = book.load_chapters()
    root = tmp_path_factory.mktemp("ci_book")
    given = os.environ.get("LSI_CI_CHAPTERS")
    if given:
        chapters_dir = Path(given)
        reports = [book.RunReport(name, "executed", chapters_dir / f"{name}.ipynb")
                   for name in chapters if (chapters_dir / f"{name}.ipynb").is_file()]
    else:
        chapters_dir = root / "chapters"
        reports = book.run_book("ci", out=chapters_dir, chapters=chapters, jobs=CI_JOBS)
    failed = any(r.status == "failed" for r in reports)
    html = None if failed else book.build_site(chapters_dir, root / "site")
    return CiBook(chapters, reports, chapters_dir, root / "site", html)
