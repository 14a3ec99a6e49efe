"""Provenance: the commit a run records, and what counts as a modified tree."""
import subprocess

import pytest

from lsi import provenance


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "book" / "chapters").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "book" / "chapters" / "ch.ipynb").write_text("{}")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return tmp_path


def test_clean_tree_records_the_bare_commit(repo):
    commit = provenance.git_commit(repo)
    assert len(commit) == 12 and "+" not in commit
    assert provenance.modified_files(repo) == []


def test_executed_chapters_do_not_make_the_tree_dirty(repo):
    (repo / "book" / "chapters" / "ch.ipynb").write_text('{"executed": true}')
    (repo / "untracked.txt").write_text("scratch")
    assert "+dirty" not in provenance.git_commit(repo)
    assert "+dirty" not in provenance.git_commit(repo / "book")  # from a subfolder too


def test_modified_code_makes_the_tree_dirty(repo):
    (repo / "code.py").write_text("x = 2\n")
    assert provenance.git_commit(repo).endswith("+dirty")
    assert provenance.modified_files(repo / "book") == ["code.py"]


def test_outside_a_repository_the_commit_is_unknown(tmp_path):
    assert provenance.git_commit(tmp_path) == "unknown"
    assert provenance.modified_files(tmp_path) is None


def test_timings_store_each_section_between_start_and_stop(monkeypatch):
    clock = iter([10.0, 12.5, 20.0, 21.0])
    monkeypatch.setattr(provenance.time, "perf_counter", lambda: next(clock))
    timings = provenance.Timings()
    timings.start("fit")
    assert timings.stop() is None  # nothing to display when a cell ends with it
    timings.start("score")
    timings.stop()
    assert timings == {"fit": 2.5, "score": 1.0}


@pytest.mark.parametrize("measure", ["lsi", "sui"])
def test_a_run_records_the_commit_it_started_on(measure, monkeypatch):
    """A commit made while a long run is going does not become the run's recorded commit."""
    import numpy as np

    import lsi
    from lsi import runner
    from lsi.sui import compute_sui

    head = {"commit": "started-on"}
    monkeypatch.setattr(provenance, "git_commit", lambda *a, **k: head["commit"])
    score = runner.run

    def run_then_commit(*args, **kwargs):
        table = score(*args, **kwargs)
        head["commit"] = "committed-during-the-run"
        return table

    monkeypatch.setattr(runner, "run", run_then_commit)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(12, 3)), np.arange(12) % 3
    table = (lsi.compute_lsi(X, y, progress=False) if measure == "lsi"
             else compute_sui(X, y, probe="linear", l2=1.0, progress=False))
    assert table.attrs["lsi"]["commit"] == "started-on" and table.attrs["lsi"]["wall_time_s"] > 0
