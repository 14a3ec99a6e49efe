"""`make book` re-executes a chapter only when its fingerprint changed; adoption of runs without one."""
from __future__ import annotations

import json

import nbformat
import pytest

from lsi import book
from lsi.book import fingerprint


def _chapter(folder, name, n=1, data=()):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f"profile = \"ci\"\nn = {n}")
    cell.metadata["tags"] = ["parameters"]
    nb.cells += [nbformat.v4.new_markdown_cell(f"# {name}"), cell, nbformat.v4.new_code_cell("n + 1")]
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, str(path))
    return book.Chapter(name, name.title(), path, tuple(data), {"n": n}, {})


@pytest.fixture
def executed(monkeypatch):
    """papermill replaced by a copy that records its parameters as papermill does; returns the run log."""
    import papermill

    calls = []

    def execute(source, target, parameters=None, **kw):
        calls.append(source)
        nb = nbformat.read(source, as_version=4)
        nb.metadata["papermill"] = {"parameters": parameters, "duration": 1.0,
                                    "end_time": "2026-12-01T00:00:00+00:00"}
        nbformat.write(nb, target)

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    return calls


def test_an_edited_notebook_re_executes_that_chapter_alone(tmp_path, executed, capsys):
    out = tmp_path / "site" / "chapters"
    chapters = {name: _chapter(tmp_path, name) for name in ("alpha", "beta", "gamma")}
    reports = book.run_stale("ci", out=out, chapters=chapters)
    assert [r.status for r in reports] == ["executed"] * 3 and len(executed) == 3
    assert "re-executing: not executed yet" in capsys.readouterr().out
    assert book.run_stale("ci", out=out, chapters=chapters) == [] and len(executed) == 3
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["alpha", "beta", "gamma"]
    assert all(line.endswith(", up to date") and "published at " in line for line in lines)

    nb = nbformat.read(str(chapters["beta"].notebook), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("n * 2"))
    nbformat.write(nb, str(chapters["beta"].notebook))
    reports = book.run_stale("ci", out=out, chapters=chapters)
    assert [r.chapter for r in reports] == ["beta"] and executed[-1] == str(chapters["beta"].notebook)
    assert "beta: re-executing: notebook edited" in capsys.readouterr().out
    assert book.run_stale("ci", out=out, chapters=chapters) == []


def test_a_resave_without_edits_is_not_an_edit(tmp_path):
    chapter = _chapter(tmp_path, "alpha")
    before = fingerprint.notebook_hash(chapter.notebook)
    nb = nbformat.read(str(chapter.notebook), as_version=4)
    nb.metadata["language_info"] = {"name": "python"}
    chapter.notebook.write_text(json.dumps(nb, indent=4))
    assert fingerprint.notebook_hash(chapter.notebook) == before
    nb.cells[2].source = "n + 2"
    nbformat.write(nb, str(chapter.notebook))
    assert fingerprint.notebook_hash(chapter.notebook) != before


def test_parameters_code_and_data_changes_are_named(tmp_path, executed, monkeypatch, capsys):
    out = tmp_path / "chapters"
    mirror = tmp_path / "mirrors" / "toy"
    mirror.mkdir(parents=True)
    (mirror / "train.parquet").write_bytes(b"rows")
    monkeypatch.setenv("LSI_DATA", str(tmp_path / "mirrors"))
    alpha, beta = _chapter(tmp_path, "alpha", data=("toy",)), _chapter(tmp_path, "beta")
    book.run_stale("ci", out=out, chapters={"alpha": alpha, "beta": beta})
    capsys.readouterr()

    changed = book.Chapter("alpha", "Alpha", alpha.notebook, ("toy",), {"n": 1}, {"ci": {"n": 2}})
    assert book.freshness(changed, "ci", out).changed == ["parameters changed (n 1 -> 2)"]
    (mirror / "train.parquet").write_bytes(b"other rows")
    assert book.freshness(alpha, "ci", out).changed == ["data changed (toy)"]
    assert book.freshness(beta, "ci", out).state == "up to date"  # beta reads no mirror
    monkeypatch.setattr(fingerprint, "code_hash", lambda package=fingerprint.PACKAGE: "another")
    assert book.freshness(beta, "ci", out).changed == ["lsi code changed"]
    monkeypatch.delenv("LSI_DATA")
    assert book.freshness(alpha, "ci", out).state == "unreachable"
    assert "kept as published" in str(book.freshness(alpha, "ci", out))


def test_the_code_hash_leaves_out_only_what_no_chapter_imports(tmp_path, chapters_sources):
    package = tmp_path / "lsi"
    (package / "book").mkdir(parents=True)
    (package / "claims.py").write_text("A = 1\n")
    (package / "book" / "site.py").write_text("B = 1\n")
    before = fingerprint.code_hash(package)
    (package / "book" / "site.py").write_text("B = 2\n")
    assert fingerprint.code_hash(package) == before
    (package / "published_values").mkdir()  # published values are data, hashed per table by data_hashes
    (package / "published_values" / "new-table.parquet").write_bytes(b"PAR1")
    assert fingerprint.code_hash(package) == before
    (package / "claims.py").write_text("A = 2\n")
    assert fingerprint.code_hash(package) != before
    for part in fingerprint.BUILD_ONLY:  # no chapter imports a module left out of the hash
        parent, _, leaf = ("lsi/" + part.removesuffix(".py")).rpartition("/")
        forms = [f"{parent}/{leaf}".replace("/", "."), f"from {parent.replace('/', '.')} import {leaf}"]
        for name, source in chapters_sources.items():
            assert not any(form in source for form in forms), (name, part)
    names = ("build_site", "jb_build", "add_take_it_away", "write_explorer_page", "reproduce(", "adopt(", "freshness(")
    assert not [(chapter, n) for chapter, source in chapters_sources.items() for n in names if f"book.{n}" in source]


@pytest.fixture(scope="module")
def chapters_sources():
    return {name: "\n".join(cell.source for cell in nbformat.read(str(chapter.notebook), as_version=4).cells)
            for name, chapter in book.load_chapters().items()}


def test_adoption_records_todays_fingerprint_and_says_so(tmp_path, executed):
    out = tmp_path / "chapters"
    alpha = _chapter(tmp_path, "alpha")
    book.run_chapter(alpha, "ci", out=out)
    runs_file = book.data_dir(out) / "alpha" / "runs.json"
    runs = json.loads(runs_file.read_text())
    del runs["ci"]["fingerprint"]  # a run published before fingerprints were recorded
    runs_file.write_text(json.dumps(runs))
    assert book.freshness(alpha, "ci", out).changed == ["no fingerprint recorded"]

    message = book.adopt(alpha, "ci", out)
    assert "adopted the run published at" in message and "0 of 3 source cells differ" in message
    state = book.freshness(alpha, "ci", out)
    assert state.state == "adopted" and "adopted, not re-executed at this fingerprint" in str(state)
    recorded = json.loads(runs_file.read_text())["ci"]
    assert recorded["seconds"] == runs["ci"]["seconds"] and recorded["adopted"]["source_cells_differing"] == 0

    other = book.Chapter("alpha", "Alpha", alpha.notebook, (), {"n": 1}, {"ci": {"n": 5}})
    with pytest.raises(ValueError, match="other parameters than the 'ci' profile resolves today.*n"):
        book.adopt(other, "ci", out)
    with pytest.raises(ValueError, match="no executed chapter"):
        book.adopt(_chapter(tmp_path, "beta"), "ci", out)


def test_every_published_chapter_is_up_to_date_with_its_notebook_parameters_code_and_data():
    """`make book` on a fresh clone re-executes nothing (issue 26): a commit that changes what a published
    chapter depends on re-executes it, or adopts its run (`lsi book adopt NAME`), in the same commit."""
    from prerequisites import require_mirrors

    require_mirrors()
    states = [book.freshness(chapter, "book") for chapter in book.load_chapters().values()]
    stale = [str(state) for state in states if state.needs_run]
    assert not stale, ("make book would re-execute these published chapters (re-execute them, or adopt their "
                       "runs with `lsi book adopt NAME`):\n" + "\n".join(stale))
