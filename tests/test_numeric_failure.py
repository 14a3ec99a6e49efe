"""Numeric failure is an error, never a table of NaN and never a hang (issue 23, item 2)."""
import numpy as np
import pytest
import torch

import lsi
from core_data import blobs
from lsi import training
import lsi.cli.compute
from lsi.cli import main
from lsi.sui import compute_sui
from lsi.validation import NonFiniteError

X, Y = blobs(24, 3, 3)
DIVERGING = dict(solver="gd", epochs=30, progress=False)


def test_diverging_training_is_an_error_naming_the_samples_and_the_learning_rate(tmp_path):
    with pytest.raises(NonFiniteError, match=r"lsi is NaN or inf \(lsi, kl_mean, kl_cov, grad_norm\) for 24 "
                                             r"sample\(s\) at positions \[0, 1, 2, .*lr=1e\+20"):
        lsi.compute_lsi(X, Y, lr=1e20, checkpoint=tmp_path / "run", **DIVERGING)
    assert not list((tmp_path / "run").glob("chunk-*"))  # nothing non-finite is stored for a resume


def test_float32_overflow_names_float32():
    with pytest.raises(NonFiniteError, match="float32"):
        lsi.compute_lsi(X, Y, lr=1e3, dtype="float32", **DIVERGING)


def test_flagging_keeps_the_rows_and_marks_them():
    table = lsi.compute_lsi(X, Y, lr=1e20, on_nonfinite="flag", **DIVERGING)
    assert len(table) == 24 and table["nonfinite"].all() and table["lsi"].isna().all()
    fine = lsi.compute_lsi(X, Y, on_nonfinite="flag", **DIVERGING)
    assert not fine["nonfinite"].any() and np.isfinite(fine["lsi"]).all()
    with pytest.raises(ValueError, match="on_nonfinite='ignore' is not valid"):
        lsi.compute_lsi(X, Y, on_nonfinite="ignore", **DIVERGING)


def test_the_newton_step_tier_is_not_flagged_for_its_unsolved_grad_norm():
    table = lsi.compute_lsi(X, Y, solver="newton-step", on_nonfinite="flag", progress=False)
    assert table["grad_norm"].isna().all() and not table["nonfinite"].any()


def test_a_non_finite_sui_is_an_error_naming_the_sample(monkeypatch):
    original = lsi.sui.api.weight_si

    def broken(kernel, deltas, sigma):  # as if one leave-one-out solve had overflowed
        values = original(kernel, deltas, sigma).clone()
        values[1] = float("inf")
        return values

    monkeypatch.setattr(lsi.sui.api, "weight_si", broken)
    options = dict(probe="linear", l2=1e-3, progress=False, indices=[3, 7, 9])
    with pytest.raises(NonFiniteError, match=r"sui is NaN or inf \(sui_weight\) for 1 sample\(s\) at positions \[7\]"):
        compute_sui(X, Y, **options)
    flagged = compute_sui(X, Y, on_nonfinite="flag", **options)
    assert flagged["nonfinite"].tolist() == [False, True, False]


def test_a_hessian_with_nan_raises_instead_of_looping():
    with pytest.raises(NonFiniteError, match="NaN or inf"):
        training._damped_cholesky(torch.full((3, 3), float("nan"), dtype=torch.float64))


def test_damping_is_bounded_and_a_zero_hessian_is_damped():
    indefinite = torch.diag(torch.tensor([-1.0, 1.0], dtype=torch.float64))
    with pytest.raises(training.SolverDoesNotApply, match="stays indefinite"):
        training._damped_cholesky(indefinite, max_damping=1e-3)
    factor = training._damped_cholesky(indefinite)
    assert torch.allclose(factor @ factor.T, indefinite + 10 * torch.eye(2, dtype=torch.float64))
    zero = training._damped_cholesky(torch.zeros(2, 2, dtype=torch.float64))
    assert torch.allclose(zero @ zero.T, 1e-8 * torch.eye(2, dtype=torch.float64))


@pytest.fixture
def features_file(tmp_path):
    path = tmp_path / "F.npz"
    np.savez(path, features=X, labels=Y)
    return path


def test_the_cli_reports_divergence_as_one_line_and_writes_nothing(features_file, tmp_path, capsys):
    out = tmp_path / "R.parquet"
    assert main(["compute", "--features", str(features_file), "--solver", "gd", "--epochs", "30", "--lr", "1e20",
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lsi compute: error: lsi is NaN or inf") and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["compute", "--features", str(features_file), "--solver", "gd", "--epochs", "30", "--lr", "1e20",
                 "--on-nonfinite", "flag", "--out", str(out), "--quiet"]) == 0
    assert lsi.load_table(out)["nonfinite"].all()


@pytest.mark.parametrize("error", [
    training.SolverDoesNotApply("a leave-one-out solve did not reach its tolerance"),
    torch.linalg.LinAlgError("linalg.cholesky: The factorization could not be completed"),
    NonFiniteError("the Hessian holds NaN"),
    KeyError("a key"),
])
def test_every_error_raised_on_purpose_reaches_the_cli_as_one_line(error, features_file, tmp_path, monkeypatch,
                                                                   capsys):
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(lsi.cli.compute, "compute_lsi", failing)
    assert main(["compute", "--features", str(features_file), "--out", str(tmp_path / "R.parquet"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"lsi compute: error: {error.args[0]}\n"
