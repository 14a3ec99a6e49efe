"""The Imagenette/Imagewoof chapter end to end on a small stand-in in the official folder layout.

Imagenette and Imagewoof are not mirrored offline, so the published book shows
the chapter skipped with a note. These tests run it at the ``ci`` profile twice:
with no data (the note, nothing else fails) and with a fixture written in the
official layout of the fast.ai archives (``<name>2-320/{train,val}/<wnid>/*.JPEG``)
from real CIFAR-10 images when the mirror is available (random images otherwise),
so every section of the chapter executes.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import numpy as np
import pytest

from fixtures_data import jpeg
from lsi import book
from lsi.data.images import IMAGENETTE_WNIDS, IMAGEWOOF_WNIDS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # papermill runs the chapter at ci

PER_CLASS = {"train": 12, "val": 2}


def _write_layout(downloads: Path) -> str:
    """Both archives' folder trees, 12 training and 2 validation JPEGs per class; returns the image source."""
    rng = np.random.default_rng(0)
    mirror = os.environ.get("LSI_DATA")
    cifar = None
    if mirror and (Path(mirror) / "cifar10" / "train.parquet").is_file():
        from lsi.data import load_dataset
        cifar = load_dataset("cifar10", "train", limit=2 * 10 * sum(PER_CLASS.values()), seed=1)
    row = 0
    for name, wnids in (("imagenette", IMAGENETTE_WNIDS), ("imagewoof", IMAGEWOOF_WNIDS)):
        for split, count in PER_CLASS.items():
            for wnid in wnids:
                folder = downloads / name / f"{name}2-320" / split / wnid
                folder.mkdir(parents=True, exist_ok=True)
                for k in range(count):
                    path = folder / f"{wnid}_{k}.JPEG"
                    if cifar is not None:
                        cifar.image(row).convert("RGB").resize((64, 64)).save(path, "JPEG")
                    else:
                        path.write_bytes(jpeg(rng, 64))
                    row += 1
    return "cifar10" if cifar is not None else "random"


def _outputs(notebook: Path) -> str:
    nb = nbformat.read(str(notebook), as_version=4)
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts += [str(v) for k, v in output.get("data", {}).items() if k.startswith("text")]
    return "\n".join(texts)


def _png_count(notebook: Path) -> int:
    nb = nbformat.read(str(notebook), as_version=4)
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("LSI_DOWNLOADS", str(tmp_path / "downloads"))
    monkeypatch.setenv("LSI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LSI_OFFLINE", "1")
    return tmp_path


def test_without_the_data_the_chapter_runs_and_says_how_to_get_it(isolated):
    chapter = book.load_chapters()["imagenet_subsets"]
    report = book.run_chapter(chapter, "ci", out=isolated / "out")
    assert report.status == "executed", report
    assert book.error_cells(report.output) == []
    text = _outputs(report.output)
    assert "This chapter is skipped" in text and "imagenette2-320.tgz" in text and "imagewoof2-320.tgz" in text
    assert "Not run: Imagenette and Imagewoof are not available" in text


def test_with_data_in_the_official_layout_every_section_runs(isolated):
    source = _write_layout(isolated / "downloads")
    chapter = book.load_chapters()["imagenet_subsets"]
    report = book.run_chapter(chapter, "ci", out=isolated / "out")
    assert report.status == "executed", report
    assert book.error_cells(report.output) == []
    text = _outputs(report.output)
    assert "This chapter is skipped" not in text and "Both data sets are available" in text
    assert "Imagewoof (hard) has higher LSI than Imagenette" in text
    assert text.count("Mislabelled samples have substantially higher LSI") >= 2
    assert _png_count(report.output) == 4  # one gallery per data set, one per paper's example class
    if source == "cifar10":
        assert "CIFAR-10 at the same settings: median LSI" in text
