"""A failure in the middle of writing a chapter's data or runs.json leaves the old ones intact (issue 23, item 8)."""
from __future__ import annotations

import json
import os

import pytest

from lsi.book import records, run


def _old_data(data):
    final = data / "alpha"
    final.mkdir(parents=True)
    (final / "scores.parquet").write_bytes(b"old scores")
    records.record_run(final, {"book": {"seconds": 10.0, "commit": "old"}})
    return final


def _new_data(data):
    staging = data / ".staging-alpha"
    (staging / "alpha").mkdir(parents=True)
    (staging / "alpha" / "scores.parquet").write_bytes(b"new scores")
    return staging


def _failing_replace(monkeypatch, when):
    real = os.replace

    def replace(src, dst):
        if when(str(src), str(dst)):
            raise OSError("disk full (simulated)")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_a_failed_runs_json_write_leaves_the_old_file(tmp_path, monkeypatch):
    final = _old_data(tmp_path)
    before = (final / "runs.json").read_text()
    _failing_replace(monkeypatch, lambda src, dst: dst.endswith("runs.json"))
    with pytest.raises(OSError, match="simulated"):
        records.record_run(final, {"book": {"seconds": 99.0}})
    assert (final / "runs.json").read_text() == before
    assert sorted(p.name for p in final.iterdir()) == ["runs.json", "scores.parquet"]  # no temporary left


def test_a_failed_data_swap_leaves_the_old_data(tmp_path, monkeypatch):
    final = _old_data(tmp_path)
    staging = _new_data(tmp_path)
    _failing_replace(monkeypatch, lambda src, dst: src.endswith(".staging-alpha/alpha"))
    with pytest.raises(OSError, match="simulated"):
        run._install_data("alpha", staging, tmp_path, {"seconds": 5.0, "commit": "new"}, "ci")
    assert (final / "scores.parquet").read_bytes() == b"old scores"
    assert json.loads((final / "runs.json").read_text()) == {"book": {"seconds": 10.0, "commit": "old"}}
    assert not (tmp_path / ".replaced-alpha").exists()


def test_a_crash_between_or_after_the_renames_is_recovered(tmp_path):
    final = _old_data(tmp_path)
    aside = tmp_path / ".replaced-alpha"
    os.replace(final, aside)  # killed between the two renames: the old folder aside, nothing in its place
    records.recover_folder(final)
    assert (final / "scores.parquet").read_bytes() == b"old scores" and not aside.exists()
    staging = _new_data(tmp_path)
    os.replace(final, aside)
    os.replace(staging / "alpha", final)  # killed after both renames, before the old folder was deleted
    records.recover_folder(final)
    assert (final / "scores.parquet").read_bytes() == b"new scores" and not aside.exists()


def test_a_completed_swap_installs_the_new_data_and_keeps_other_profiles(tmp_path):
    final = _old_data(tmp_path)
    staging = _new_data(tmp_path)
    run._install_data("alpha", staging, tmp_path, {"seconds": 5.0, "commit": "new"}, "ci")
    assert (final / "scores.parquet").read_bytes() == b"new scores"
    assert json.loads((final / "runs.json").read_text()) == {"book": {"seconds": 10.0, "commit": "old"},
                                                             "ci": {"seconds": 5.0, "commit": "new"}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alpha"]
