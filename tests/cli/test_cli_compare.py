"""``lsi compare``: a table and a summary from the command line, and the same clear errors as ``lsi compute``."""
import numpy as np
import pandas as pd
import pytest

import lsi
from core_data import blobs
from lsi import compare
from lsi.cli import main
from test_cli import BAD_INPUTS


def _run(*argv):
    return main([str(a) for a in argv])


@pytest.fixture
def flipped_file(tmp_path):
    X, y = blobs(60, 3, 3, seed=2, spread=0.6)
    flipped = np.zeros(60, bool)
    flipped[[3, 10, 17, 25, 40, 55]] = True
    y = np.where(flipped, (y + 1) % 3, y)
    path = tmp_path / "F.npz"
    np.savez(path, features=X, labels=y, flipped=flipped)
    return path, X, y, flipped


def test_compare_writes_the_table_and_the_summary(flipped_file, tmp_path, capsys):
    path, X, y, flipped = flipped_file
    out = tmp_path / "T.parquet"
    assert _run("compare", "--features", path, "--methods", "lsi:newton-step,loss,cleanlab", "--folds", "3",
                "--out", out, "--quiet") == 0
    table = lsi.load_table(out)
    assert list(table.columns) == ["lsi:newton-step", "loss", "cleanlab"] and len(table) == 60
    assert set(table.attrs["lsi"]["method_wall_time_s"]) == set(table.columns)
    summary = pd.read_csv(tmp_path / "T.summary.csv", index_col="method")
    expected = compare.detection(table, flipped)
    pd.testing.assert_frame_equal(summary[["auroc", "average_precision", "precision_at_k", "k"]],
                                  expected[["auroc", "average_precision", "precision_at_k", "k"]], check_dtype=False)
    printed = capsys.readouterr().out
    assert "finding the 6 flipped labels among 60" in printed and "precision_at_k" in printed


def test_without_a_mask_there_is_no_summary(tmp_path):
    X, y = blobs(30, 3, 2)
    path = tmp_path / "F.npz"
    np.savez(path, features=X, labels=y)
    assert _run("compare", "--features", path, "--methods", "loss", "--out", tmp_path / "T.parquet") == 0
    assert not (tmp_path / "T.summary.csv").exists()


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_the_same_clear_error_as_compute(case, tmp_path, capsys):
    arrays, message = BAD_INPUTS[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert _run("compare", "--features", path, "--methods", "loss", "--out", tmp_path / "T.parquet") == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.parquet*"))


X_OK, Y_OK = blobs(20, 3, 3)


@pytest.mark.parametrize("flipped, message", [
    (np.zeros(19, bool), "length 20"),
    (np.full(20, 2), "boolean mask"),
    (np.zeros(20, bool), "marks no sample"),
])
def test_bad_flipped_mask(flipped, message, tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, features=X_OK, labels=Y_OK, flipped=flipped)
    assert _run("compare", "--features", path, "--methods", "loss", "--out", tmp_path / "T.parquet") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "T.parquet").exists()


@pytest.mark.parametrize("methods, message", [
    ("loss,magic", "unknown method 'magic'"),
    ("knn_shapley", "pyDVL"),
])
def test_bad_or_unavailable_methods(methods, message, tmp_path, capsys):
    path = tmp_path / "F.npz"
    np.savez(path, features=X_OK, labels=Y_OK)
    assert _run("compare", "--features", path, "--methods", methods, "--out", tmp_path / "T.parquet") == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "T.parquet").exists()


def test_missing_file(tmp_path, capsys):
    assert _run("compare", "--features", tmp_path / "nope.npz", "--methods", "loss",
                "--out", tmp_path / "T.parquet") == 2
    assert "does not exist" in capsys.readouterr().err
