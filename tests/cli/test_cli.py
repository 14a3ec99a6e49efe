"""The command line: results, shards, and a clear error (and no output) for every bad input."""
import numpy as np
import pandas as pd
import pytest
import torch

import lsi
from core_data import blobs
from lsi.cli import build_parser, main


def _run(*argv):
    return main([str(a) for a in argv])


def test_compute_writes_a_table_with_metadata(features_file, tmp_path, capsys):
    out = tmp_path / "R.parquet"
    assert _run("compute", "--features", features_file, "--out", out, "--quiet") == 0
    table = lsi.load_table(out)
    assert len(table) == 40 and table.attrs["lsi"]["data"]["source"] == str(features_file)
    assert "most informative" in capsys.readouterr().out


def test_threads_apply_to_the_run_and_are_restored_after_it(features_file, tmp_path, capsys):
    """``--threads`` governs the run (recorded in the table) and the caller's count is back afterwards,
    also when the run fails."""
    before = torch.get_num_threads()
    asked = 1 if before != 1 else 2
    out = tmp_path / "R.parquet"
    assert _run("compute", "--features", features_file, "--threads", asked, "--out", out, "--quiet") == 0
    assert lsi.load_table(out).attrs["lsi"]["execution"]["threads"] == asked
    assert torch.get_num_threads() == before
    assert _run("compute", "--features", tmp_path / "missing.npz", "--threads", asked, "--out", out) == 2
    assert torch.get_num_threads() == before


def test_components_score_the_principal_components(features_file, tmp_path):
    out = tmp_path / "R.parquet"
    assert _run("compute", "--features", features_file, "--components", "2", "--out", out, "--quiet") == 0
    X, y = blobs(40, 3, 3)
    expected = lsi.compute_lsi(lsi.stats.principal_components(X, 2), y, progress=False)
    table = lsi.load_table(out)
    np.testing.assert_array_equal(table["lsi"].to_numpy(), expected["lsi"].to_numpy())
    assert table.attrs["lsi"]["data"]["principal_components"] == 2


def test_shards_merge_to_the_full_table(features_file, tmp_path):
    full, a, b, merged = (tmp_path / f"{name}.parquet" for name in ("full", "a", "b", "merged"))
    common = ("--features", features_file, "--solver", "gd", "--epochs", "30", "--quiet")
    assert _run("compute", *common, "--out", full) == 0
    assert _run("compute", *common, "--indices", "0:25", "--out", a) == 0
    assert _run("compute", *common, "--indices", "25:40", "--out", b) == 0
    assert _run("merge", a, b, "--out", merged) == 0
    pd.testing.assert_frame_equal(lsi.load_table(merged), lsi.load_table(full))
    assert _run("merge", a, a, "--out", tmp_path / "bad.parquet") == 2


def test_merge_accepts_shards_from_other_devices_and_budgets(features_file, tmp_path, capsys):
    a, b, merged = (tmp_path / f"{name}.parquet" for name in ("a", "b", "merged"))
    common = ("--features", features_file, "--solver", "gd", "--epochs", "30", "--quiet")
    assert _run("compute", *common, "--indices", "0:25", "--memory-budget", "20KiB", "--out", a) == 0
    assert _run("compute", *common, "--indices", "25:40", "--memory-budget", "2GiB", "--out", b) == 0
    shard = lsi.load_table(b)  # as if computed on a second GPU: only the device differs
    shard.attrs["lsi"]["options"]["device"], shard.attrs["lsi"]["device"] = "cuda:1", "cuda (a GPU)"
    lsi.save_table(shard, b)
    assert _run("merge", a, b, "--out", merged) == 0
    table = lsi.load_table(merged)
    assert len(table) == 40 and [s["options"]["device"] for s in table.attrs["lsi"]["shards"]] == ["cpu", "cuda:1"]
    assert table.attrs["lsi"]["identity"]["data_sha256"] == lsi.load_table(a).attrs["lsi"]["identity"]["data_sha256"]


def test_merge_refuses_shards_of_other_data_or_options(features_file, tmp_path, capsys):
    X, y = blobs(40, 3, 3)
    other = tmp_path / "other.npz"
    np.savez(other, features=X + 1e-9, labels=y)
    a, b, c = (tmp_path / f"{name}.parquet" for name in ("a", "b", "c"))
    common = ("--solver", "gd", "--epochs", "30", "--quiet")
    assert _run("compute", "--features", features_file, *common, "--indices", "0:25", "--out", a) == 0
    assert _run("compute", "--features", other, *common, "--indices", "25:40", "--out", b) == 0
    assert _run("merge", a, b, "--out", tmp_path / "bad.parquet") == 2
    assert "different data" in capsys.readouterr().err
    assert _run("compute", "--features", features_file, "--solver", "gd", "--epochs", "31", "--quiet",
                "--indices", "25:40", "--out", c) == 0
    assert _run("merge", a, c, "--out", tmp_path / "bad.parquet") == 2
    assert "epochs: 30 vs 31" in capsys.readouterr().err
    assert not (tmp_path / "bad.parquet").exists()


def _bad_npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


X_OK, Y_OK = blobs(20, 3, 3)
BAD_INPUTS = {
    "nan features": (dict(features=np.where(np.eye(20, 3) > 0, np.nan, X_OK), labels=Y_OK), "NaN or inf"),
    "inf features": (dict(features=np.where(np.eye(20, 3) > 0, np.inf, X_OK), labels=Y_OK), "NaN or inf"),
    "float labels": (dict(features=X_OK, labels=Y_OK + 0.5), "integer"),
    "string labels": (dict(features=X_OK, labels=np.array(["a"] * 20)), "integer"),
    "negative labels": (dict(features=X_OK, labels=Y_OK - 1), ">= 0"),
    "one class": (dict(features=X_OK, labels=np.zeros(20, int)), "single class"),
    "length mismatch": (dict(features=X_OK, labels=Y_OK[:-1]), "different lengths"),
    "empty": (dict(features=np.zeros((0, 3)), labels=np.zeros(0, int)), "empty"),
    "missing arrays": (dict(x=X_OK, labels=Y_OK), "lacks array"),
    "1-D features": (dict(features=X_OK[:, 0], labels=Y_OK), "2-D"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_clear_error_and_writes_nothing(case, tmp_path, capsys):
    arrays, message = BAD_INPUTS[case]
    out = tmp_path / "R.parquet"
    assert _run("compute", "--features", _bad_npz(tmp_path, **arrays), "--out", out, "--quiet") == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("*.parquet*"))


@pytest.mark.parametrize("argv, message", [
    (("--indices", "0:99"), "out of range"),
    (("--indices", "five"), "a:b"),
    (("--lr", "-1"), "lr == -1"),
    (("--epochs", "0"), "epochs == 0"),
    (("--device", "tpu"), "device"),
    (("--memory-budget", "lots"), "memory budget"),
    (("--components", "-1"), "--components -1"),
])
def test_bad_options_are_clear_errors(features_file, tmp_path, capsys, argv, message):
    out = tmp_path / "R.parquet"
    assert _run("compute", "--features", features_file, "--out", out, "--quiet", *argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unknown_choice_is_rejected_by_the_parser(features_file, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        _run("compute", "--features", features_file, "--out", tmp_path / "R.parquet", "--solver", "magic")
    assert exit_info.value.code == 2


def test_every_solver_of_the_package_is_a_choice(features_file, tmp_path):
    from lsi.enums import Solver

    out = tmp_path / "R.parquet"
    assert _run("compute", "--features", features_file, "--out", out, "--quiet", "--solver", "warm-start",
                "--epochs", "30") == 0
    assert lsi.load_table(out).attrs["lsi"]["options"]["solver"] == "warm-start"
    parse = build_parser().parse_args
    assert [parse(["compute", "--dataset", "digits", "--out", "o", "--solver", s.value]).solver for s in Solver] \
        == [s.value for s in Solver]


def test_missing_and_unreadable_files(tmp_path, capsys):
    out = tmp_path / "R.parquet"
    assert _run("compute", "--features", tmp_path / "nope.npz", "--out", out) == 2
    assert "does not exist" in capsys.readouterr().err
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    assert _run("compute", "--features", garbage, "--out", out) == 2
    assert "not a readable .npz" in capsys.readouterr().err
    assert not out.exists()


def test_api_rejects_unknown_option_values():
    with pytest.raises(ValueError, match="hessian='block' is not valid; choose one of 'diag', 'kfac', 'full'"):
        lsi.compute_lsi(X_OK, Y_OK, hessian="block")
    with pytest.raises(ValueError, match="probe='mlp'"):
        lsi.compute_lsi(X_OK, Y_OK, probe="mlp", solver="converged")


def test_sui_measure_through_the_same_command(features_file, tmp_path):
    out = tmp_path / "S.parquet"
    assert _run("compute", "--features", features_file, "--measure", "sui", "--probe", "linear", "--l2", "1e-3",
                "--indices", "0:10", "--out", out, "--quiet") == 0
    table = lsi.load_table(out)
    assert len(table) == 10 and (table["sui_weight"] >= 0).all()


@pytest.mark.slow  # 3-7 min here under load (issue 23: make test-fast stays short)
def test_smooth_mlp_activation_from_the_command_line(features_file, tmp_path):
    out = tmp_path / "R.parquet"
    assert _run("compute", "--features", features_file, "--probe", "mlp", "--hidden", "3", "--activation", "gelu",
                "--indices", "0:3", "--out", out, "--quiet") == 0
    table = lsi.load_table(out)
    assert table.attrs["lsi"]["options"]["activation"] == "gelu" and table["grad_norm"].max() <= 1e-10
    assert _run("compute", "--features", features_file, "--probe", "mlp", "--out", tmp_path / "x.parquet",
                "--quiet") == 2  # ReLU with the converged default is refused with a message


@pytest.mark.slow  # 3-7 min here under load (issue 23: make test-fast stays short)
def test_a_corrupted_dataset_is_scored_with_its_marks(tmp_path, monkeypatch):
    monkeypatch.setenv("LSI_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "R.parquet"
    assert _run("compute", "--dataset", "digits", "--extractor", "pixels", "--limit", "60", "--seed", "3",
                "--corruption", "flip:0.2", "--out", out, "--quiet") == 0
    flipped = lsi.features.extract_features("digits", "pixels", limit=60, seed=3, corruption="flip:0.2",
                                            progress=False)
    table = lsi.load_table(out)
    np.testing.assert_array_equal(table["label"], flipped.labels)
    np.testing.assert_array_equal(table["original_label"], flipped.clean_labels)
    np.testing.assert_array_equal(np.flatnonzero(table["corrupted"]), flipped.changed)
    assert len(flipped.changed) == 12 and (table["label"] != table["original_label"]).sum() == 12
    expected = lsi.compute_lsi(flipped.features, flipped.labels, ids=flipped.ids, seed=3, progress=False)
    np.testing.assert_array_equal(table["lsi"], expected["lsi"])
    assert lsi.published.default_name(lsi.published.record_of(out)[1]) == "digits-flip-0.2-60-converged"


def test_corruption_needs_a_registered_dataset(features_file, tmp_path, capsys):
    out = tmp_path / "R.parquet"
    assert _run("compute", "--features", features_file, "--corruption", "flip:0.1", "--out", out) == 2
    assert "--corruption needs --dataset" in capsys.readouterr().err and not out.exists()
