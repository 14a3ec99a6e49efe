"""The book as teaching material: exercises with folded solutions, the teaching page, the glossary.

``test_exercise_syntax_builds_without_warnings_and_folds_solutions`` builds a
tiny book with the repository's own ``_config.yml`` and the exercise
convention of EXERCISES.md (``{exercise}``, gated ``{solution-start}`` /
``{solution-end}`` with code cells between, ``:class: dropdown``), with
warnings as errors, and checks that the solution holds its code and outputs
and is marked to be folded by sphinx-togglebutton. That solutions really
unfold on a click is checked in a browser by ``tests/book/test_browser.py``.
"""
from __future__ import annotations

import re
import shutil

import nbformat
import pytest
import yaml
from bs4 import BeautifulSoup

from lsi import book

GLOSSARY_TERMS = ("LSI", "Laplace approximation", "GGN", "KL divergence", "Leave-one-out", "Probe",
                  "Prior precision", "Diagonal Hessian", "KFAC", "Nesterov momentum", "SUI", "PSMI",
                  "TRAK", "DP-SGD", "AUROC", "Spearman correlation", "InfoNCE")


def _code(source: str, output: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": output},
                                           execution_count=1)]
    return cell


def _chapter(name: str) -> nbformat.NotebookNode:
    md = nbformat.v4.new_markdown_cell
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        md(f"# Chapter {name}\n\nThe {{term}}`LSI` of a sample is a {{term}}`KL divergence`."),
        md("## Exercises"),
        md(f"```{{exercise}}\n:label: {name}-ex1\n\nWhy is the KL not symmetric?\n```"),
        md(f"```{{solution-start}} {name}-ex1\n:class: dropdown\n```"),
        md("Because the two precisions enter differently:"),
        _code("kl_forward = 0.25\nkl_forward", "SOLUTION_OUTPUT_" + name),
        md("```{solution-end}\n```"),
        md(f"```{{exercise}}\n:label: {name}-ex2\n\nName the two terms.\n```"),
        md(f"```{{solution}} {name}-ex2\n:class: dropdown\n\nThe mean term and the covariance term.\n```"),
    ]
    return nb


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_book")
    source = root / "source"
    (source / "book").mkdir(parents=True)
    shutil.copyfile(book.REPO / "_config.yml", source / "_config.yml")
    shutil.copytree(book.REPO / "book" / "_ext", source / "book" / "_ext")
    (source / "intro.md").write_text("# Tiny book\n\nA test.\n")
    (source / "glossary.md").write_text("# Glossary\n\n```{glossary}\nLSI\n  Laplace Sample Information.\n\n"
                                        "KL divergence\n  Relative entropy.\n```\n")
    for name in ("alpha", "beta"):
        nbformat.write(_chapter(name), str(source / f"{name}.ipynb"))
    toc = {"format": "jb-book", "root": "intro",
           "chapters": [{"file": "alpha"}, {"file": "beta"}, {"file": "glossary"}]}
    (source / "_toc.yml").write_text(yaml.safe_dump(toc))
    return book.jb_build(source, root / "work", root / "build.log")  # raises on any warning


def test_config_enables_sphinx_exercise():
    config = yaml.safe_load((book.REPO / "_config.yml").read_text())
    assert "sphinx_exercise" in config["sphinx"]["extra_extensions"]


@pytest.mark.slow  # jb build
@pytest.mark.timeout(900)
def test_exercise_syntax_builds_without_warnings_and_folds_solutions(tiny_book):
    for name in ("alpha", "beta"):
        page = (tiny_book / f"{name}.html").read_text()
        soup = BeautifulSoup(page, "html.parser")
        exercises = soup.select("div.exercise.admonition")
        solutions = soup.select("div.solution.admonition")
        assert [e["id"] for e in exercises] == [f"{name}-ex1", f"{name}-ex2"]
        assert len(solutions) == 2
        for solution, exercise in zip(solutions, exercises):
            assert "dropdown" in solution["class"]  # folded by sphinx-togglebutton
            link = solution.select_one(".admonition-title a")
            assert link is not None and link["href"] == f"#{exercise['id']}"
        gated = solutions[0]
        assert gated.select_one(".cell .cell_input") is not None, "the code cell is not inside the solution"
        assert f"SOLUTION_OUTPUT_{name}" in gated.get_text()
        assert f"SOLUTION_OUTPUT_{name}" not in "".join(str(s) for s in soup.select("div.cell")
                                                          if not s.find_parent("div", class_="solution"))
        assert soup.select_one('script[src*="togglebutton.js"]') is not None
        selector = re.search(r"togglebuttonSelector = '([^']*)'", page).group(1)
        assert ".admonition.dropdown" in [s.strip() for s in selector.split(",")]
        assert soup.select_one('a.reference[href*="glossary.html#term-LSI"]') is not None


@pytest.mark.slow  # jb build (the same tiny book)
@pytest.mark.timeout(900)
def test_solutions_are_printed_unfolded(tiny_book):
    """A printed page (make pdf, or a browser's print) shows the solutions."""
    css = (book.REPO / "book" / "_ext" / "static" / "offline_book_print.css").read_text()
    assert "@media print" in css and "toggle-hidden" in css
    page = (tiny_book / "alpha.html").read_text()
    assert "offline_book_print.css" in page


def test_teaching_page_and_glossary_are_in_the_toc():
    toc = yaml.safe_load((book.REPO / "_toc.yml").read_text())
    files = [entry["file"] for part in toc["parts"] for entry in part.get("chapters", [])]
    assert "book/teaching" in files and "book/glossary" in files
    for name in ("teaching", "glossary"):
        assert (book.REPO / "book" / f"{name}.md").is_file()


def test_glossary_defines_the_terms_the_issue_asks_for():
    defined = _glossary_terms()
    missing = [term for term in GLOSSARY_TERMS if term not in defined]
    assert not missing, missing


def _glossary_terms() -> set[str]:
    text = (book.REPO / "book" / "glossary.md").read_text()
    block = text.split("```{glossary}", 1)[1].split("\n```", 1)[0]
    return {line.strip() for line in block.splitlines() if line and not line[0].isspace()}


def test_every_term_role_in_the_notebooks_and_pages_is_defined_in_the_glossary():
    """``{term}`X``` (or ``{term}`text <X>```) must name a glossary entry: Sphinx would fail the book build on it."""
    defined = {term.lower() for term in _glossary_terms()}
    sources = sorted((book.REPO / "notebooks").glob("*.ipynb")) + sorted((book.REPO / "book").glob("*.md"))
    undefined = []
    for path in sources:
        for role in re.findall(r"\{term\}`([^`]+)`", path.read_text()):
            target = re.sub(r"^.*<(.+)>$", r"\1", role)
            if target.lower() not in defined:
                undefined.append(f"{path.name}: {target}")
    assert not undefined, undefined


def test_teaching_page_tables_every_chapter_with_its_measured_run_time(tmp_path):
    chapters = book.load_chapters()
    text = (book.REPO / "book" / "teaching.md").read_text()
    assert "{{ chapter_table }}" in text
    for name in ("lsi_from_scratch", "cifar10", "imdb", "sui"):  # the paths and goals name them
        assert "{{ link_%s }}" % name in text
    published = book.teaching_substitutions(book.PUBLISHED, chapters)
    for name in chapters:
        executed = (book.PUBLISHED / f"{name}.ipynb").is_file()
        assert (f"](chapters/{name})" in published["chapter_table"]) == executed, name
        assert published[f"run_{name}"].endswith("at `book`") == executed, name
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"duration": 139.4, "parameters": {"profile": "ci"}}
    nbformat.write(nb, str(tmp_path / "lsi_from_scratch.ipynb"))
    values = book.teaching_substitutions(tmp_path, chapters)
    assert values["run_lsi_from_scratch"] == "2.3 min at `ci`"
    assert values["run_cifar10"] == "not run" and "chapters/cifar10" not in values["chapter_table"]
    assert values["link_cifar10"] == "*CIFAR-10* (not in this build)"
    assert values["link_lsi_from_scratch"] == "[LSI from scratch (digits)](chapters/lsi_from_scratch)"
    assert "| 30 minutes | 2.3 min at `ci` | none to download |" in values["chapter_table"]


def test_time_to_learn_is_read_from_the_chapter(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("## Prerequisites\n\n- **Time to learn**: 45 minutes.\n- x")]
    nbformat.write(nb, str(tmp_path / "a.ipynb"))
    assert book.time_to_learn(tmp_path / "a.ipynb") == "45 minutes"
    nb.cells = [nbformat.v4.new_markdown_cell("no time")]
    nbformat.write(nb, str(tmp_path / "b.ipynb"))
    assert book.time_to_learn(tmp_path / "b.ipynb") == "not stated"
