"""The execution status page: per chapter its run, machine, data hashes and whether it is up to date."""
from __future__ import annotations

import datetime
import json

import nbformat
import pytest

from lsi import book
from lsi.book import reproduction, status


@pytest.fixture
def executed(monkeypatch):
    import papermill

    def execute(source, target, parameters=None, **kw):
        nb = nbformat.read(source, as_version=4)
        nb.metadata["papermill"] = {"parameters": parameters, "duration": 61.0,
                                    "end_time": datetime.datetime.now(datetime.timezone.utc).isoformat()}
        nbformat.write(nb, target)

    monkeypatch.setattr(papermill, "execute_notebook", execute)


def _chapter(folder, name, data=()):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("profile = \"ci\"\nn = 1")
    cell.metadata["tags"] = ["parameters"]
    nb.cells += [cell, nbformat.v4.new_code_cell("n + 1")]
    nbformat.write(nb, str(folder / f"{name}.ipynb"))
    return book.Chapter(name, name.title(), folder / f"{name}.ipynb", tuple(data), {"n": 1}, {})


def test_the_status_table_says_which_run_each_page_shows(tmp_path, executed, monkeypatch):
    mirror = tmp_path / "mirrors" / "toy"
    mirror.mkdir(parents=True)
    (mirror / "rows.bin").write_bytes(b"rows")
    monkeypatch.setenv("LSI_DATA", str(tmp_path / "mirrors"))
    out = tmp_path / "chapters"
    chapters = {"alpha": _chapter(tmp_path, "alpha", data=("toy",)), "beta": _chapter(tmp_path, "beta")}
    book.run_stale("ci", out=out, chapters=chapters)
    runs = book.data_dir(out) / "beta" / "runs.json"
    record = json.loads(runs.read_text())
    del record["ci"]["fingerprint"]
    record["ci"]["date"] = "2026-11-01T00:00:00Z"  # runs.json and the notebook now disagree
    runs.write_text(json.dumps(record))
    book.adopt(chapters["beta"], "ci", out)

    values = status.status_substitutions(out, chapters)
    alpha, beta = values["status_table"].splitlines()[2:4]
    commit = json.loads((book.data_dir(out) / "alpha" / "runs.json").read_text())["ci"]["commit"]
    assert alpha.startswith(f"| Alpha | `ci` | `{commit}` |") and "| 0 s |" in alpha  # runs.json's wall time
    assert "| 0.00 GiB |" in alpha  # the stand-in for papermill starts no kernel: nothing resident
    assert f"toy `{book.fingerprint.mirror_hash(mirror)[:12]}`" in alpha and alpha.endswith("| yes |")
    machine = json.loads((book.data_dir(out) / "alpha" / "runs.json").read_text())["ci"]["machine"]
    assert f"| {machine['cores']} cores, {machine['gpu'] or 'no GPU'} |" in alpha
    assert "**adopted**" in beta and "not re-executed at this fingerprint" in beta
    assert "`runs.json` records a run ending 2026-11-01" in beta
    assert values["status_commits"] == f"All 2 chapters ran on commit `{commit}`."

    (mirror / "rows.bin").write_bytes(b"other rows")
    alpha = status.status_substitutions(out, chapters)["status_table"].splitlines()[2]
    assert alpha.endswith("| no: data changed (toy) |")


def test_a_book_on_several_commits_is_flagged():
    commits = {"alpha": "aaa", "beta": "bbb", "gamma": "aaa"}
    assert reproduction.commit_warning(commits).startswith(
        "warning: the 3 published chapters ran on 2 different commits (aaa, bbb)")
    assert reproduction.commit_warning({"alpha": "aaa", "beta": "aaa"}) == ""


def test_the_reproduction_page_shows_a_report_or_how_to_make_one(tmp_path):
    assert "`make reproduce` re-executes every chapter" in status.reproduction_section(tmp_path / "none.json")
    comparison = reproduction.ChapterComparison("alpha", "compared", "aaa", "bbb", 3.0, ["n: 1 -> 2"],
                                                reproduction.compare_claims(
                                                    [{"claim": "c", "ours": "0.5", "tier": "",
                                                      "verdict": {"status": "yes", "detail": "", "rule": "r"}}],
                                                    [{"claim": "c", "ours": "0.6", "tier": "",
                                                      "verdict": {"status": "yes", "detail": "", "rule": "r"}}]))
    report = reproduction.Report("ci", "bbb", "2026-12-06T00:00:00Z", [comparison], {"alpha": "aaa"})
    record, page = reproduction.write_report(report, tmp_path)
    text = status.reproduction_section(record)
    assert "| c | 0.5 | 0.6 | 0.5 -> 0.6 (+0.1, identical digits) | **drifted** | yes |" in text
    assert "Parameters that differ: `n: 1 -> 2`" in text and page.read_text().endswith(text)


def test_peak_memory_sees_a_child_process_hold_its_memory():
    """A child holding 300 MB for two seconds is seen (sampled every 0.1 s); one started before is not, and with
    no child started the peak is 0."""
    import subprocess
    import sys
    import time

    from lsi.book.run import PeakMemory

    hold = "import time; block = bytearray(300 * 2 ** 20); block[::4096] = b'x' * len(block[::4096]); time.sleep(2)"
    earlier = subprocess.Popen([sys.executable, "-c", hold])
    try:
        with PeakMemory(interval=0.1) as idle:
            time.sleep(1.0)
    finally:
        earlier.wait()
    assert idle.peak == 0
    with PeakMemory(interval=0.1) as memory:
        subprocess.run([sys.executable, "-c", hold], check=True)
    assert 300 * 2 ** 20 <= memory.peak <= 2 * 2 ** 30
