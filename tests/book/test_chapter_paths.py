"""No executed page of the book shows a path of the machine it ran on (issue 25), an error or a stderr block."""
import json
from pathlib import Path

import pytest

from lsi.book.profiles import REPO
from lsi.book.run import LOCAL_PATH

CHAPTERS = sorted((REPO / "book" / "chapters").glob("*.ipynb"))

STALE: set[str] = set()
"""Chapters whose published pages still show a local path (none: their paths were made relative)."""


def local_paths(notebook: Path) -> list[tuple[int, str]]:
    """``(cell number, path)`` of every local absolute path in the outputs of ``notebook``'s cells."""
    cells = json.loads(notebook.read_text())["cells"]
    return [(number, path) for number, cell in enumerate(cells)
            for output in cell.get("outputs", []) for path in LOCAL_PATH.findall(json.dumps(output))]


@pytest.mark.parametrize("notebook", [pytest.param(
    path, id=path.stem,
    marks=[pytest.mark.xfail(strict=True, reason="republished by the coordinator")] if path.stem in STALE else [])
    for path in CHAPTERS])
def test_no_executed_page_shows_a_local_path(notebook):
    assert local_paths(notebook) == []
    assert not LOCAL_PATH.findall(json.dumps(json.loads(notebook.read_text())["metadata"]))  # papermill paths


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[path.stem for path in CHAPTERS])
def test_no_executed_page_shows_an_error_or_a_stderr_block(notebook):
    """The browser test finds these on the built page too; this finds them in seconds, without a build."""
    cells = json.loads(notebook.read_text())["cells"]
    shown = [(number, output.get("text", output.get("ename", ""))[:200]) for number, cell in enumerate(cells)
             for output in cell.get("outputs", [])
             if output["output_type"] == "error" or output.get("name") == "stderr"]
    assert shown == []


def test_the_pattern_finds_local_paths_and_spares_urls(tmp_path):
    page = {"cells": [{"outputs": [{"data": {"text/plain": ["PosixPath('/work/main/book/data/x.parquet')"]}}]},
                      {"outputs": [{"text": "see https://example.org/work/x and $LSI_DATA/cifar10 and ~/.cache"}]},
                      {"source": "/root/in/a/source/cell/is/not/output"}]}
    (tmp_path / "page.ipynb").write_text(json.dumps(page))
    assert local_paths(tmp_path / "page.ipynb") == [(0, "/work/main/book/data/x.parquet")]


def test_the_runner_makes_paths_in_metadata_and_outputs_relative(tmp_path, monkeypatch):
    import nbformat

    from lsi.book import run
    from lsi.book.profiles import REPO

    mirror = tmp_path / "mirror"
    monkeypatch.setenv("LSI_DATA", str(mirror))
    scratch = tmp_path / ".scratch.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"input_path": str(REPO / "notebooks" / "x.ipynb"), "output_path": str(scratch)}
    cell = nbformat.v4.new_code_cell("print(ds.source)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"mirror:{mirror}/sst2/train.parquet\n"),
                    nbformat.v4.new_output("display_data", data={"text/html": f"<td>{tmp_path}/x/y.bin</td>"})]
    nb.cells.append(cell)
    nbformat.write(nb, str(scratch))
    assert run.portable_paths(scratch, REPO / "notebooks" / "x.ipynb", tmp_path / "elsewhere" / "x.ipynb") == 2
    written = json.loads(scratch.read_text())
    assert written["metadata"]["papermill"] == {"input_path": "notebooks/x.ipynb", "output_path": "x.ipynb"}
    outputs = written["cells"][0]["outputs"]
    text = lambda value: "".join(value) if isinstance(value, list) else value  # nbformat may split lines
    assert text(outputs[0]["text"]) == "mirror:sst2/train.parquet\n"
    assert text(outputs[1]["data"]["text/html"]) == "<td>y.bin</td>"
    assert not LOCAL_PATH.findall(json.dumps(written))
