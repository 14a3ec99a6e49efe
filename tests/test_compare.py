"""lsi.compare: each method against an independent computation, its orientation on flipped labels,
the detection table against hand-computed numbers, and clear failures."""
import importlib

import numpy as np
import pytest
import torch
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

import lsi
from core_data import blobs
from lsi import compare
from lsi.corruptions import flip_labels

WD = 0.01


@pytest.fixture(scope="module")
def flipped_problem():
    X, clean = blobs(150, 4, 3, seed=1, spread=0.6)
    corrupted = flip_labels(clean, 0.1, seed=0)
    mask = np.zeros(len(clean), bool)
    mask[corrupted.changed] = True
    return X, corrupted.values, mask


def _sklearn_probe(X, y, n):
    """The same objective, mean CE + wd/2 ||theta||^2 with the bias penalised, through scikit-learn."""
    Xa = np.hstack([X, np.ones((len(X), 1))])
    model = LogisticRegression(C=1 / (n * WD), fit_intercept=False, tol=1e-12, max_iter=10_000).fit(Xa, y)
    return model, Xa


def _auroc(table, mask, method):
    return compare.detection(table[[method]], mask).loc[method, "auroc"]


def test_lsi_column_is_compute_lsi_of_the_same_tier(flipped_problem):
    X, y, mask = flipped_problem
    table = compare.scores(X, y, ["lsi", "lsi:newton-step"])
    np.testing.assert_allclose(table["lsi"], lsi.compute_lsi(X, y, progress=False)["lsi"], rtol=1e-12)
    np.testing.assert_allclose(table["lsi:newton-step"],
                               lsi.compute_lsi(X, y, solver="newton-step", progress=False)["lsi"], rtol=1e-12)
    assert _auroc(table, mask, "lsi") > 0.9
    assert set(table.attrs["lsi"]["wall_time_s"]) == {"lsi", "lsi:newton-step"}


def test_loss_matches_scikit_learn(flipped_problem):
    X, y, mask = flipped_problem
    table = compare.scores(X, y, ["loss"], weight_decay=WD)
    model, Xa = _sklearn_probe(X, y, len(y))
    expected = -np.log(model.predict_proba(Xa)[np.arange(len(y)), y])
    np.testing.assert_allclose(table["loss"], expected, rtol=1e-5)
    assert _auroc(table, mask, "loss") > 0.9


def test_self_influence_matches_autograd(flipped_problem):
    X, y, mask = flipped_problem
    table = compare.scores(X, y, ["self_influence"], weight_decay=WD)
    model, Xa = _sklearn_probe(X, y, len(y))
    theta = torch.tensor(model.coef_.T.copy()).reshape(-1)  # (d+1, C) row-major, as LinearProbe
    Xt, Yt = torch.tensor(Xa), torch.tensor(y)

    def ce(t, rows=slice(None)):
        logits = Xt[rows] @ t.view(Xa.shape[1], -1)
        return torch.nn.functional.cross_entropy(logits, Yt[rows], reduction="none")

    H = torch.autograd.functional.hessian(lambda t: ce(t).mean() + WD / 2 * t.dot(t), theta)
    grads = torch.stack([torch.autograd.functional.jacobian(lambda t: ce(t, [i])[0], theta) for i in range(len(y))])
    expected = (grads * torch.linalg.solve(H, grads.T).T).sum(1).numpy()
    np.testing.assert_allclose(table["self_influence"], expected, rtol=1e-4)
    assert _auroc(table, mask, "self_influence") > 0.9


def test_cleanlab_is_one_minus_out_of_fold_self_confidence(flipped_problem):
    X, y, mask = flipped_problem
    table = compare.scores(X, y, ["cleanlab"], weight_decay=WD, folds=3, seed=2)
    expected = np.zeros(len(y))
    for train, held in StratifiedKFold(3, shuffle=True, random_state=2).split(X, y):
        model, _ = _sklearn_probe(X[train], y[train], len(train))
        probs = model.predict_proba(np.hstack([X[held], np.ones((len(held), 1))]))
        expected[held] = 1 - probs[np.arange(len(held)), y[held]]
    np.testing.assert_allclose(table["cleanlab"], expected, atol=1e-5)
    assert table.attrs["lsi"]["raw_sign"]["cleanlab"] == -1
    assert _auroc(table, mask, "cleanlab") > 0.9


def test_sui_column_is_lsi_sui_of_the_linear_probe(flipped_problem):
    from lsi.sui import compute_sui_features
    X, y, mask = flipped_problem
    table = compare.scores(X, y, ["sui"], sui_l2=0.5)
    assert _auroc(table, mask, "sui") > 0.8
    expected = compute_sui_features(X, y, probe="linear", l2=0.5, progress=False)["sui_weight"]
    np.testing.assert_allclose(table["sui"], expected, rtol=1e-12)


def test_trak_runs_the_basic_projector_and_ranks_flips_high(flipped_problem):
    X, y, mask = flipped_problem
    table = compare.scores(X, y, ["trak"], trak_proj_dim=64)
    assert table.attrs["lsi"]["trak_projector"].startswith("BasicProjector (rademacher, 15 dims")
    assert table.attrs["lsi"]["raw_sign"]["trak"] == -1
    assert _auroc(table, mask, "trak") > 0.8
    targets = compare.scores(X, y, ["trak"], trak_proj_dim=64, test_features=X[:30], test_labels=y[:30])
    assert targets["trak"].notna().all() and not np.allclose(targets["trak"], table["trak"])


def test_psmi_is_the_package_value_negated_and_seeded(flipped_problem):
    import psmi
    X, y, mask = flipped_problem
    state = np.random.get_state()
    table = compare.scores(X, y, ["psmi"], psmi_estimators=300, seed=3)
    assert all((a == b).all() for a, b in zip(state[1:2], np.random.get_state()[1:2]))  # global RNG untouched
    np.random.seed(3)
    expected = psmi.PSMI(n_estimators=300).fit_transform(X, y)[0]
    np.testing.assert_allclose(table["psmi"], -expected, rtol=1e-12)
    assert _auroc(table, mask, "psmi") > 0.8


@pytest.mark.parametrize("method", ["knn_shapley", "loo"])
def test_pydvl_methods_are_left_out_with_a_clear_message(method):
    X, y = blobs(20, 3, 2)
    with pytest.raises(ImportError, match="pyDVL.*numpy"):
        compare.scores(X, y, [method])


def test_missing_package_names_the_extra(monkeypatch):
    real = importlib.import_module

    def fake(name, *args):
        if name == "psmi":
            raise ImportError("No module named 'psmi'")
        return real(name, *args)

    monkeypatch.setattr(compare.importlib, "import_module", fake)
    X, y = blobs(20, 3, 2)
    with pytest.raises(ImportError, match=r"'psmi' package: pip install 'lsi\[baselines\]'"):
        compare.scores(X, y, ["loss", "psmi"])


@pytest.mark.parametrize("methods, message", [
    ("loss,magic", "unknown method 'magic'"),
    (["lsi:fast"], "unknown method 'lsi:fast'"),
    ("loss,loss", "twice"),
    ("", "methods is empty"),
])
def test_bad_method_lists(methods, message):
    X, y = blobs(20, 3, 2)
    with pytest.raises(ValueError, match=message):
        compare.scores(X, y, methods)


def test_detection_against_hand_computed_numbers():
    import pandas as pd
    table = pd.DataFrame({"a": [0.9, 0.8, 0.3, 0.6, 0.1], "b": [0.1, 0.2, 0.3, 0.4, 0.5]})
    table.attrs["lsi"] = {"wall_time_s": {"a": 1.5}}
    flipped = np.array([True, False, True, False, False])
    summary = compare.detection(table, flipped)
    # a: positives 0.9 (beats 3 negatives) and 0.3 (beats 1) -> 4/6; ranks 1 and 4 -> AP (1/1 + 2/4) / 2
    assert summary.loc["a", "auroc"] == pytest.approx(4 / 6)
    assert summary.loc["a", "average_precision"] == pytest.approx(0.75)
    assert summary.loc["a", "precision_at_k"] == 0.5 and summary.loc["a", "k"] == 2
    assert summary.loc["a", "wall_time_s"] == 1.5 and np.isnan(summary.loc["b", "wall_time_s"])
    # b: positives 0.1 (beats none) and 0.3 (beats 0.2) -> 1/6; ranks 3 and 5 -> AP (1/3 + 2/5) / 2
    assert summary.loc["b", "auroc"] == pytest.approx(1 / 6)
    assert summary.loc["b", "average_precision"] == pytest.approx((1 / 3 + 2 / 5) / 2)
    assert summary.loc["b", "precision_at_k"] == 0.0


def test_detection_bootstrap_intervals_bracket_the_estimate(flipped_problem):
    X, y, mask = flipped_problem
    table = compare.scores(X, y, ["loss"])
    summary = compare.detection(table, mask, bootstrap=200, seed=0).loc["loss"]
    assert summary["auroc_low"] <= summary["auroc"] <= summary["auroc_high"] < 1.0 + 1e-12
    assert summary["average_precision_low"] < summary["average_precision_high"]


def test_scores_validate_inputs_like_compute_lsi():
    X, y = blobs(20, 3, 2)
    with pytest.raises(ValueError, match="different lengths"):
        compare.scores(X, y[:-1], ["loss"])
    with pytest.raises(ValueError, match="NaN or inf"):
        compare.scores(np.where(np.eye(20, 3) > 0, np.nan, X), y, ["loss"])


def test_softmax_reference_is_consistent():
    """The sklearn stand-in used above is the same probe: its optimum zeroes our objective's gradient."""
    X, y = blobs(60, 3, 3, seed=4)
    model, Xa = _sklearn_probe(X, y, len(y))
    W = model.coef_.T
    P = softmax(Xa @ W, axis=1)
    P[np.arange(len(y)), y] -= 1
    gradient = Xa.T @ P / len(y) + WD * W
    assert np.abs(gradient).max() < 1e-6
