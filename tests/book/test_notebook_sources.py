"""Chapter sources hold narrative and calls: short cells, no verdict thresholds, no typed measurements.

Every verdict comes from :mod:`lsi.claims`, and every number a reader sees
about a run comes from the run's output, so the checks below are textual:

- no code cell (other than ``parameters``) longer than ``MAX_CELL_LINES`` non-blank lines;
- no code cell compares against a numeric literal with ``<``, ``>``, ``<=`` or ``>=``
  (a threshold belongs in ``lsi.claims`` with its documented reason);
- no output call (``plots.*``, ``verdicts.*``) stands as a bare statement inside a block (``if``, ``for``,
  ``with``, ``try``): IPython shows only a cell's last top-level expression, so the output would be silently
  dropped; such calls go through ``display``;
- no markdown cell states a decimal number or a percentage outside math, code
  and references to the paper (``Sec. 4.1``), since such a number would be
  typed rather than measured (or would go stale when a parameter changes).
"""
from __future__ import annotations

import ast
import re

import nbformat
import pytest

from lsi import book

MAX_CELL_LINES = 12
_THRESHOLD = re.compile(r"(?<![<>=!])(<=|>=|<|>)\s*-?\d|\d\s*(<=|>=|<(?!<)|>(?!>))")
_TYPED_NUMBER = re.compile(r"\d+\.\d+|\d+(?:\.\d+)?\s?%|\b\d+(?:\.\d+)?x\b")
_REFERENCE = re.compile(r"\b(?:Sec|App|Fig|Figs|Table|Eq)\.?\s+\d+(?:\.\d+)*")
_MATH_OR_CODE = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`|```.*?```", re.S)


def _chapters():
    return list(book.load_chapters().values())


def _code(cell) -> str:
    """Source without strings and comments: f-string text is output, not a threshold."""
    text = re.sub(r"#.*", "", cell.source)
    return re.sub(r"'[^'\n]*'|\"[^\"\n]*\"", "''", text)


def _cells(chapter, kind: str) -> list:
    """``(number, cell)`` for every ``kind`` cell (``"code"``, ``"markdown"``) of the chapter's notebook."""
    nb = nbformat.read(str(chapter.notebook), as_version=4)
    return [(number, cell) for number, cell in enumerate(nb.cells) if cell.cell_type == kind]


_OUTPUTS = ("plots.", "verdicts.")
_BLOCKS = (ast.If, ast.For, ast.While, ast.With, ast.Try)


def _dropped_outputs(source: str) -> list[str]:
    """Output calls standing as bare statements inside a block: IPython shows none of them."""
    blocks = [node for node in ast.walk(ast.parse(source)) if isinstance(node, _BLOCKS)]
    return [ast.unparse(inner.value.func) for block in blocks for inner in ast.walk(block)
            if isinstance(inner, ast.Expr) and isinstance(inner.value, ast.Call)
            and ast.unparse(inner.value.func).startswith(_OUTPUTS)]


@pytest.mark.parametrize("chapter", _chapters(), ids=lambda c: c.name)
def test_code_cells_are_short_and_hold_no_thresholds(chapter):
    for number, cell in _cells(chapter, "code"):
        if "parameters" in cell.metadata.get("tags", []):
            continue
        lines = [line for line in cell.source.splitlines() if line.strip()]
        assert len(lines) <= MAX_CELL_LINES, f"{chapter.name} cell {number}: {len(lines)} lines"
        found = _THRESHOLD.search(_code(cell))
        assert not found, f"{chapter.name} cell {number}: threshold literal {found.group(0)!r}"


@pytest.mark.parametrize("chapter", _chapters(), ids=lambda c: c.name)
def test_markdown_states_no_typed_numbers(chapter):
    for number, cell in _cells(chapter, "markdown"):
        prose = _REFERENCE.sub("", _MATH_OR_CODE.sub("", cell.source))
        found = _TYPED_NUMBER.search(prose)
        assert not found, f"{chapter.name} cell {number}: typed number {found.group(0)!r} in {prose[:80]!r}"


def test_the_checks_catch_what_they_are_for():
    code = nbformat.v4.new_code_cell('verdict = "yes" if ratio > 1.5 else "no"  # f"{x > 2}"')
    assert _THRESHOLD.search(_code(code))
    assert not _THRESHOLD.search(_code(nbformat.v4.new_code_cell('y = (labels == 5).astype(int); s = f"{a > 2}"')))
    assert _TYPED_NUMBER.search("LSI grows 5.3x here") and _TYPED_NUMBER.search("the top 10% hold")
    assert not _TYPED_NUMBER.search(_REFERENCE.sub("", "the paper's probe (Sec. 4.1)"))
    assert _dropped_outputs("if ok:\n    plots.note('x')") == ["plots.note"]
    assert _dropped_outputs("if ok:\n    display(plots.note('x'))\nplots.table(t)") == []


@pytest.mark.parametrize("chapter", _chapters(), ids=lambda c: c.name)
def test_no_output_is_dropped_inside_a_block(chapter):
    for number, cell in _cells(chapter, "code"):
        dropped = _dropped_outputs(cell.source)
        assert not dropped, f"{chapter.name} cell {number}: {dropped} in a block shows nothing; use display()"
