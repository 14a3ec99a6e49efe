"""`make reproduce`: re-execute into a separate folder, compare claim by claim with the published chapter."""
from __future__ import annotations

import json

import pytest

from book_fixture import write_notebook
from lsi import book, claims
from lsi.book import reproduction as reproduce
from lsi.book import verdicts
from lsi.cli import main

CLAIMS_CHAPTER = [
    ("profile = \"ci\"\nn = 400\nseed = 0", ["parameters"]),
    ("import numpy as np\nfrom lsi import claims\nfrom lsi.book import verdicts\nrng = np.random.default_rng(seed)\n"
     "values = rng.lognormal(0, 1.5, n)", []),
    ("verdicts.box([claims.Claim('The values are long-tailed.',\n"
     "    f'p99/median = {np.quantile(values, 0.99) / np.median(values):.3g} ({n:,} values)',\n"
     "    claims.long_tail(values)),\n"
     "  claims.Claim('Half of them lie below the median.', f'{np.mean(values < np.median(values)):.0%}',\n"
     "    claims.ratio_near(float(np.mean(values < np.median(values))) * 2, 1.0, what='twice the share'))])",
     []),
]


def claims_chapter(folder, profiles=None):
    path = write_notebook(folder / "claims_fixture.ipynb", "# Claims fixture", CLAIMS_CHAPTER)
    return book.Chapter("claimed", "Claims fixture", path, (), {"n": 400, "seed": 0}, profiles or {})


def test_box_stores_its_claims_and_the_html_reads_back_the_same():
    rows = [claims.Claim("A <b>claim</b> & more.", "AUROC 0.93 (95% interval 0.90 to 0.95, n = 1,000)",
                         claims.Verdict(claims.YES, rule="separates"), tier="converged"),
            claims.Claim("Another.", "ratio 5.3x", claims.Verdict(claims.PARTLY, "smaller than 10", rule="ratio_near")),
            claims.Claim("Its variant.", "ratio 4.1x", claims.Verdict(claims.CANNOT_TELL, "one replicate", rule="ratio_near"),
                         sub=True)]
    shown = verdicts.box(rows)
    stored = shown.metadata[claims.CLAIMS_METADATA]
    assert stored == [c.to_dict() for c in rows] and [claims.Claim.from_dict(r) for r in stored] == rows
    assert reproduce._parse_box(shown.data) == stored  # what a box published before the metadata says


def test_numbers_keep_identical_digits_or_their_interval():
    numbers, note = reproduce.compare_numbers("AUROC 0.931 (95% interval 0.90 to 0.95, n = 1,000)",
                                              "AUROC 0.942 (95% interval 0.91 to 0.96, n = 1,000)")
    assert note == "" and [(n.published, n.reproduced, n.within) for n in numbers] == [
        ("0.931", "0.942", True), ("95", "95", True), ("1,000", "1,000", True)]
    assert numbers[0].tolerance == "published interval 0.9 to 0.95"
    numbers, _ = reproduce.compare_numbers("AUROC 0.931 (95% interval 0.90 to 0.95)",
                                           "AUROC 0.962 (95% interval 0.93 to 0.98)")
    assert not numbers[0].within and numbers[0].difference == pytest.approx(0.031)
    numbers, _ = reproduce.compare_numbers("p99/median 15.7x, top-10% hold 47.6%, Spearman -0.699",
                                           "p99/median 15.8x, top-10% hold 47.6%, Spearman -0.699")
    assert [(n.published, n.within) for n in numbers] == [("15.7", False), ("10", True), ("47.6", True),
                                                          ("-0.699", True)]
    assert numbers[0].tolerance == "identical digits"
    assert reproduce.compare_numbers("3 samples", "3 samples, 4 seeds")[1] == (
        "the result holds 2 numbers, the published one 1")


def _claim(text, ours, status="yes"):
    verdict = {"status": status, "detail": "" if status == "yes" else "found less", "rule": "r"}
    return {"claim": text, "ours": ours, "tier": "", "verdict": verdict}


def test_claims_are_matched_by_text_and_each_outcome_is_named():
    published = [_claim("a", "1.5"), _claim("b", "2.0"), _claim("c", "3"), _claim("d", "4")]
    reproduced = [_claim("b", "2.1"), _claim("a", "1.5"), _claim("c", "3", "no"), _claim("e", "5")]
    rows = {row.claim: row for row in reproduce.compare_claims(published, reproduced)}
    assert {k: r.outcome for k, r in rows.items()} == {
        "a": "identical", "b": "drifted", "c": "verdict changed", "d": "missing", "e": "new"}
    assert [r.ok for r in rows.values()] == [True, False, False, False, False]


@pytest.mark.slow
def test_reproduce_reports_identical_then_drift_with_a_non_zero_exit(tmp_path, monkeypatch, capsys):
    published = tmp_path / "book" / "chapters"
    chapter = claims_chapter(tmp_path)
    assert book.run_chapter(chapter, "ci", out=published).status == "executed"
    stored = reproduce.notebook_claims(published / "claimed.ipynb")
    assert [c["claim"] for c in stored] == ["The values are long-tailed.", "Half of them lie below the median."]

    monkeypatch.setattr(reproduce, "load_chapters", lambda: {"claimed": chapter})
    monkeypatch.setattr(reproduce, "PUBLISHED", published)
    out = tmp_path / "reproduced"
    assert main(["book", "reproduce", "--profile", "ci", "--out", str(out)]) == 0
    report = json.loads((out / "data" / "reproduction.json").read_text())
    assert report["ok"] and [c["outcome"] for c in report["chapters"][0]["claims"]] == ["identical"] * 2
    assert "claimed: 2 claims reproduced" in capsys.readouterr().out
    assert not (published.parent / "data" / "reproduction.json").exists()  # never over the published book

    monkeypatch.setattr(book.run, "run_chapter", None)  # resumes: nothing is executed again
    assert main(["book", "reproduce", "--profile", "ci", "--out", str(out)]) == 0
    assert "already reproduced at this commit" in capsys.readouterr().out
    monkeypatch.undo()

    perturbed = claims_chapter(tmp_path, profiles={"ci": {"seed": 1}})
    monkeypatch.setattr(reproduce, "load_chapters", lambda: {"claimed": perturbed})
    monkeypatch.setattr(reproduce, "PUBLISHED", published)
    assert main(["book", "reproduce", "--profile", "ci", "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "1 of 2 claims moved beyond their tolerance" in text and "seed: 0 -> 1" in text
    report = json.loads((out / "data" / "reproduction.json").read_text())
    first = report["chapters"][0]["claims"][0]
    assert not report["ok"] and first["outcome"] == "drifted"
    assert first["numbers"][0]["tolerance"] == "identical digits" and not first["numbers"][0]["within"]
    page = (out / "reproduction.md").read_text()
    assert "| The values are long-tailed. |" in page and "**drifted**" in page


@pytest.mark.slow
def test_book_run_shows_what_moved_against_the_published_chapter(tmp_path, monkeypatch, capsys):
    published = tmp_path / "book" / "chapters"
    chapter = claims_chapter(tmp_path)
    assert book.run_chapter(chapter, "ci", out=published).status == "executed"
    monkeypatch.setattr(book, "load_chapters", lambda: {"claimed": chapter})
    monkeypatch.setattr(book, "PUBLISHED", published)
    assert main(["book", "run", "claimed", "--profile", "ci", "-p", "n=300", "--out", str(tmp_path / "mine"),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "against the published chapter:" in text and "n: 400 -> 300" in text
    assert "drifted          The values are long-tailed." in text and "(400 values)" in text


def test_a_reproduction_in_two_sittings_resumes_from_the_published_book(tmp_path, monkeypatch, capsys):
    """A republication at one commit in two sittings, as on machines that forget `_build`: each runs in a
    checkout of that commit (whose published chapters it compares with) and publishes into the checkout that
    is committed (`--publish DIR`); the second resumes from what the first published there."""
    import shutil

    at_commit = tmp_path / "at_commit" / "book" / "chapters"             # the checkout of the commit
    first, second = claims_chapter(tmp_path), book.Chapter("second", "Second", claims_chapter(tmp_path).notebook,
                                                           (), {"n": 300, "seed": 0}, {})
    for chapter in (first, second):
        assert book.run_chapter(chapter, "ci", out=at_commit).status == "executed"
    runs = at_commit.parent / "data" / "claimed" / "runs.json"
    book.record_run(runs.parent, {**json.loads(runs.read_text()), "book": {"commit": "elsewhere"}})
    shutil.copytree(at_commit.parent, tmp_path / "main" / "book")
    main_book = tmp_path / "main" / "book" / "chapters"                   # the checkout that is committed
    before = (at_commit / "claimed.ipynb").read_bytes()
    monkeypatch.setattr(reproduce, "load_chapters", lambda: {"claimed": first, "second": second})
    monkeypatch.setattr(reproduce, "PUBLISHED", at_commit)
    out = tmp_path / "reproduced"
    common = ["book", "reproduce", "--profile", "ci", "--out", str(out), "--quiet", "--publish", str(main_book)]

    assert main(common + ["--chapters", "claimed"]) == 1                 # the book is not all reproduced yet
    report = json.loads((main_book.parent / "data" / reproduce.REPORT_JSON).read_text())
    assert [(c["chapter"], c["status"]) for c in report["chapters"]] == [("claimed", "compared"),
                                                                          ("second", reproduce.NOT_YET)]
    assert "published over the book: claimed;" in capsys.readouterr().out
    published_runs = json.loads((main_book.parent / "data" / "claimed" / "runs.json").read_text())
    assert published_runs["book"] == {"commit": "elsewhere"}               # other profiles' records kept
    assert published_runs["ci"]["commit"] == report["commit"]
    assert (main_book / "claimed.ipynb").read_bytes() == (out / "chapters" / "claimed.ipynb").read_bytes()
    assert (at_commit / "claimed.ipynb").read_bytes() == before             # the compared-with book untouched
    assert main(common + ["--chapters", "nowhere"]) == 2
    assert "Unknown chapter(s) nowhere; choose among claimed, second." in capsys.readouterr().err

    shutil.rmtree(out)                                                    # a new machine: no _build
    executed = []
    run_chapter = book.run.run_chapter
    monkeypatch.setattr(book.run, "run_chapter", lambda chapter, *a, **k: executed.append(chapter.name)
                        or run_chapter(chapter, *a, **k))
    assert main(common + ["--chapters", "second"]) == 0
    assert executed == ["second"]
    assert "claimed: reproduced and published at this commit before" in capsys.readouterr().out
    report = json.loads((main_book.parent / "data" / reproduce.REPORT_JSON).read_text())
    assert report["ok"] and [c["chapter"] for c in report["chapters"]] == ["claimed", "second"]
    assert all(row["outcome"] == "identical" for c in report["chapters"] for row in c["claims"])

    executed.clear()
    assert main(common) == 0 and executed == []                           # a third sitting has nothing left


def test_the_progress_line_counts_this_sittings_chapters_only():
    """A sitting of three chapters out of a longer book: the place and the time left are the sitting's."""
    expected = {"a": 600, "b": 120, "c": 60, "other": 9999}
    assert reproduce._progress(["a", "b", "c"], "b", expected, 30, False).startswith(
        "[2/3] b: published run took 2.0 min; elapsed 30 s, left about 3.0 min")
    assert "left about 60 s" in reproduce._progress(["a", "b", "c"], "b", expected, 30, True)
    assert "no recorded time" in reproduce._progress(["a", "b", "c"], "b", expected | {"c": None}, 30, False)
