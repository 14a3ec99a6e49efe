"""``lsi compare`` and ``lsi compute``: every bad input is one line, exit 2, checked before the computation,
and nothing is written (issue 23, item 7; ``lsi published`` and ``lsi merge`` in test_published_integrity.py)."""
import numpy as np
import pytest

import lsi.cli.compare
import lsi.cli.compute
import lsi.compare
import lsi.results
from core_data import blobs
from lsi.cli import main

X_OK, Y_OK = blobs(20, 3, 3)


def _run(*argv):
    return main([str(a) for a in argv])


def _npz(tmp_path, **arrays):
    path = tmp_path / "F.npz"
    np.savez(path, **arrays)
    return path


BAD_ARRAYS = {
    "3-D features": (dict(features=X_OK.reshape(20, 3, 1), labels=Y_OK), "2-D array"),
    "NaN features": (dict(features=np.where(np.eye(20, 3) > 0, np.nan, X_OK), labels=Y_OK), "NaN or inf"),
    "negative labels": (dict(features=X_OK, labels=Y_OK - 1), ">= 0"),
    "more labels than samples": (dict(features=X_OK, labels=np.arange(21) % 3), "different lengths"),
    "sparse labels": (dict(features=X_OK, labels=np.where(Y_OK == 1, 5, Y_OK)), "skip class(es) [1, 3, 4]"),
    "2-D labels": (dict(features=X_OK, labels=np.eye(3)[Y_OK]), "1-D array"),
    "NaN labels": (dict(features=X_OK, labels=np.where(np.arange(20) == 4, np.nan, Y_OK)), "integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_compare_refuses_bad_arrays(case, tmp_path, capsys):
    arrays, message = BAD_ARRAYS[case]
    out = tmp_path / "T.parquet"
    assert _run("compare", "--features", _npz(tmp_path, **arrays), "--methods", "loss", "--out", out) == 2
    _assert_one_line(capsys, "compare", message)
    assert not list(tmp_path.glob("T*"))


@pytest.mark.parametrize("argv, message", [
    (("--methods", "loss,magic"), "unknown method 'magic'"),
    (("--methods", ""), "methods is empty"),
    (("--methods", "loss", "--folds", "1"), "--folds 1: must be at least 2"),
    (("--methods", "loss", "--folds", "0"), "--folds 0: must be at least 2"),
    (("--methods", "loss", "--trak-proj-dim", "0"), "--trak-proj-dim 0: must be at least 1"),
    (("--methods", "loss", "--trak-proj-dim", "-5"), "--trak-proj-dim -5: must be at least 1"),
    (("--methods", "loss", "--psmi-estimators", "0"), "--psmi-estimators 0"),
    (("--methods", "loss", "--weight-decay", "0"), "--weight-decay == 0.0, must be > 0"),
    (("--methods", "loss", "--sui-l2", "nan"), "--sui-l2 == nan"),
])
def test_compare_refuses_bad_options_before_reading_the_file(argv, message, tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the options are checked before the features are read")

    monkeypatch.setattr(lsi.cli.compare, "load_npz", never)
    out = tmp_path / "T.parquet"
    assert _run("compare", "--features", _npz(tmp_path, features=X_OK, labels=Y_OK), *argv, "--out", out) == 2
    _assert_one_line(capsys, "compare", message)
    assert not out.exists()


def test_compare_missing_file(tmp_path, capsys):
    assert _run("compare", "--features", tmp_path / "nope.npz", "--methods", "loss",
                "--out", tmp_path / "T.parquet") == 2
    _assert_one_line(capsys, "compare", "does not exist")


@pytest.mark.parametrize("command", ["compare", "compute"])
@pytest.mark.parametrize("where, message", [("file/T.parquet", "is a file, not a folder"),
                                            ("folder", "is a folder"),
                                            ("readonly/T.parquet", "does not accept new files")])
def test_an_unwritable_out_is_refused_before_the_computation(command, where, message, tmp_path, capsys,
                                                             monkeypatch):
    (tmp_path / "file").write_text("")
    (tmp_path / "folder").mkdir()
    (tmp_path / "readonly").mkdir()
    real = lsi.results.tempfile.mkstemp

    def refusing(*args, dir=None, **kwargs):  # a read-only folder, even for root
        if dir is not None and str(dir).endswith("readonly"):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(lsi.results.tempfile, "mkstemp", refusing)
    computed = []
    monkeypatch.setattr(lsi.cli.compare, "scores", lambda *a, **k: computed.append(1))
    monkeypatch.setattr(lsi.cli.compute, "compute_lsi", lambda *a, **k: computed.append(1))
    features = _npz(tmp_path, features=X_OK, labels=Y_OK)
    extra = ("--methods", "loss") if command == "compare" else ()
    assert _run(command, "--features", features, *extra, "--out", tmp_path / where, "--quiet") == 2
    _assert_one_line(capsys, command, message)
    assert not computed and not list(tmp_path.rglob("*.parquet"))


def test_a_summary_that_cannot_be_computed_leaves_no_table(tmp_path, capsys, monkeypatch):
    flipped = np.zeros(20, bool)
    flipped[[1, 5]] = True

    def broken(table, mask):
        raise ValueError("detection failed")

    monkeypatch.setattr(lsi.cli.compare, "detection", broken)
    out = tmp_path / "T.parquet"
    assert _run("compare", "--features", _npz(tmp_path, features=X_OK, labels=Y_OK, flipped=flipped),
                "--methods", "loss", "--out", out, "--quiet") == 2  # the progress bar of the scores is not the error
    _assert_one_line(capsys, "compare", "detection failed")
    assert not out.exists()


def _assert_one_line(capsys, command, message):
    err = capsys.readouterr().err
    assert err.startswith(f"lsi {command}: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1, err
