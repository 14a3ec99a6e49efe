"""lsi.compare: each method against an independent computation, its orientation on flipped labels,
the detection table against hand-computed numbers, and clear failures."""
import importlib

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

import lsi
from core_data import blobs
from lsi import compare, stats
from lsi.experiments import label_noise
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


@pytest.mark.slow  # over 10 s: the exact check runs in `make test`
def test_lsi_column_is_compute_lsi_of_the_same_tier(flipped_problem):
    X, y, mask = flipped_problem
    table = compare.scores(X, y, ["lsi", "lsi:newton-step"])
    np.testing.assert_allclose(table["lsi"], lsi.compute_lsi(X, y, progress=False)["lsi"], rtol=1e-12)
    np.testing.assert_allclose(table["lsi:newton-step"],
                               lsi.compute_lsi(X, y, solver="newton-step", progress=False)["lsi"], rtol=1e-12)
    assert _auroc(table, mask, "lsi") > 0.9
    assert set(table.attrs["lsi"]["method_wall_time_s"]) == {"lsi", "lsi:newton-step"}


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
    assert table.attrs["lsi"]["trak_projector"].startswith("BasicProjector (rademacher, 10 dims")  # rank (4+1)(3-1)
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
    with pytest.raises(ImportError, match=r"'psmi' package: pip install 'laplace-sample-information\[baselines\]'"):
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
    table.attrs["lsi"] = {"method_wall_time_s": {"a": 1.5}}
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


# --- the chapters' helpers -------------------------------------------------------------------------------
from types import SimpleNamespace  # noqa: E402


def _feature_set(n=90, d=6, classes=3, seed=0):
    X, y = blobs(n, d, classes, seed=seed, spread=0.7)
    return SimpleNamespace(features=X.astype(np.float32), labels=y, ids=np.arange(1000, 1000 + n),
                           classes=[f"c{i}" for i in range(classes)])


def test_noisy_set_flips_a_stratified_subset():
    fs = _feature_set()
    setting = label_noise.noisy_set("blobs", fs, noise="flip:0.2", n=60, feature_dim=3, seed=1)
    assert setting.features.shape == (60, 3) and setting.wrong.sum() == 12
    clean = fs.labels[setting.positions]
    np.testing.assert_array_equal(setting.labels != clean, setting.wrong)
    np.testing.assert_array_equal(np.bincount(clean), [20, 20, 20])
    np.testing.assert_array_equal(setting.ids, fs.ids[setting.positions])
    with pytest.raises(ValueError, match="noise='blur'"):
        label_noise.noisy_set("blobs", fs, noise="blur")


def _noisy_run(corrupted_scale, n=400, share=0.1, seed=0):
    """A scored run: lognormal LSI, the corrupted tenth shifted up by ``corrupted_scale`` (log units)."""
    rng = np.random.default_rng(seed)
    corrupted = np.arange(n) < n * share
    return pd.DataFrame({"lsi": np.exp(rng.normal(size=n) + corrupted_scale * corrupted), "corrupted": corrupted})


def test_noise_claims_judge_fig5_and_app_e_from_the_two_runs():
    flips, human = _noisy_run(6.0), _noisy_run(2.0, seed=1)
    both = {label_noise.HUMAN: human, label_noise.FLIPS: flips}          # any order in, NOISE_KINDS order out
    table = label_noise.noise_table({"probe": both, "other": {label_noise.FLIPS: flips}})
    assert list(table.index) == [("probe", "random flips"), ("probe", "human labels (aggre)"),
                                 ("other", "random flips")]
    assert table["noise rate"].tolist() == [0.1, 0.1, 0.1]
    assert table.loc[("probe", "random flips"), "auroc"] == stats.separation(flips["lsi"], flips["corrupted"])["auroc"]
    fig5, app_e = label_noise.noise_claims(both, where="every image")
    assert fig5.claim.endswith("(Fig. 5): every image.") and fig5.verdict.status == "yes"
    assert app_e.verdict.status == "yes" and "(400 samples)" in app_e.ours
    judged = f"human mislabels {table.loc[('probe', 'human labels (aggre)'), 'median_positive']:.3g}, random flips"
    assert judged in app_e.ours                                            # the medians the rule orders are shown
    swapped = label_noise.noise_claims({label_noise.FLIPS: human, label_noise.HUMAN: flips}, where="swapped")
    assert swapped[1].verdict.status != "yes"                              # human mislabels above the flips
    only_flips = label_noise.noise_claims({label_noise.FLIPS: flips}, where="flips only")
    assert [c.claim for c in only_flips] == [fig5.claim.replace("every image", "flips only")]
    assert label_noise.noise_claims({label_noise.HUMAN: human}, where="human only") == []
    assert label_noise.noise_claims({}, where="nothing run") == []
    with pytest.raises(ValueError, match="unknown noise kind"):
        label_noise.noise_table({"probe": {"flips": flips}})


def test_detect_adds_the_setting_to_the_detection_table():
    setting = label_noise.noisy_set("blobs", _feature_set(), noise="flip:0.1", seed=0)
    table, summary = label_noise.detect(setting, ["loss"], bootstrap=50)
    assert list(summary.index) == ["loss"] and summary.loc["loss", "setting"] == "blobs"
    assert summary.loc["loss", "n"] == 90 and summary.loc["loss", "noise_rate"] == pytest.approx(9 / 90)
    assert summary.loc["loss", "auroc"] == pytest.approx(compare.detection(table, setting.wrong).loc["loss", "auroc"])


def test_covariance_effect_on_a_hand_made_table():
    mean = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1])
    cov = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0])  # the last sample jumps to the top
    table = pd.DataFrame({"lsi": mean + cov, "kl_mean": mean, "kl_cov": cov})
    found = compare.covariance_effect(table, wrong=np.arange(10) < 2)
    assert found["top_k"] == 2 and found["top_k_shared"] == 0.5
    assert found["median_cov_share"] == 0.0 and found["spearman"] < 1
    assert found["auroc_mean_term_only"] == 1.0 and found["auroc_lsi"] == pytest.approx(14 / 16)


def test_paired_differences_are_zero_for_equal_scores_and_positive_for_a_better_one():
    rng = np.random.default_rng(0)
    wrong = np.arange(100) < 10
    table = pd.DataFrame({"good": wrong + 0.3 * rng.random(100), "noise": rng.random(100)})
    assert np.all(compare.paired_differences(table.assign(copy=table["good"]), wrong, "good", "copy",
                                             bootstrap=50) == 0)
    assert compare.paired_differences(table, wrong, "good", "noise", bootstrap=50).min() > 0


def test_class_positions_renumber_in_the_given_order():
    labels = np.array([5, 3, 7, 3, 5, 7, 3, 5, 1])
    rows, renumbered = label_noise.class_positions(labels, [7, 3, 5])
    np.testing.assert_array_equal(rows, [0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(renumbered, [2, 1, 0, 1, 2, 0, 1, 2])
    rows, _ = label_noise.class_positions(labels, [3, 5], n=4, seed=0)
    assert len(rows) == 4 and set(labels[rows]) == {3, 5}


def test_project_uses_the_training_components_for_both():
    from lsi.stats import principal_components
    X, _ = blobs(40, 6, 2)
    train, test = stats.principal_projection(X, X[:5], 3)
    np.testing.assert_allclose(train, principal_components(X, 3), atol=1e-10)
    np.testing.assert_allclose(test, train[:5], atol=1e-10)
    assert stats.principal_projection(X, X[:5], 0)[0] is not None and stats.principal_projection(X, X[:5], 0)[0].shape == (40, 6)


def test_raw_restores_the_packages_signs(flipped_problem):
    X, y, _ = flipped_problem
    table = compare.scores(X, y, ["loss", "psmi"], psmi_estimators=50)
    raw = compare.raw(table)
    np.testing.assert_array_equal(raw["loss"], table["loss"])
    np.testing.assert_array_equal(raw["psmi"], -table["psmi"])


def test_trak_and_lsi_reports_the_raw_test_averaged_trak():
    train, test = _feature_set(90), _feature_set(30, seed=5)
    frame = label_noise.trak_and_lsi(train, test, n=60, n_test=15, feature_dim=4, solver="newton-step",
                                 trak_proj_dim=16)
    assert list(frame.columns) == ["index", "id", "label", "lsi", "trak"] and len(frame) == 60
    assert frame.attrs["lsi"]["n_test"] == 15 and (frame["lsi"] > 0).all()
    np.testing.assert_array_equal(frame["id"], train.ids[frame["index"]])


def test_load_features_reports_missing_data(monkeypatch):
    import lsi.features
    from lsi.data import SourceUnavailableError

    def unavailable(*args, **kwargs):
        raise SourceUnavailableError("imagenette (train) is not available: no local copy")

    monkeypatch.setattr(lsi.features, "extract_features", unavailable)
    features, reason = label_noise.load_features("imagenette")
    assert features is None and "skipped" in reason and "no local copy" in reason


def test_each_method_is_charged_the_shared_fit():
    X, y = blobs(60, 3, 3)
    walls = compare.scores(X, y, ["loss", "self_influence"]).attrs["lsi"]["method_wall_time_s"]
    alone = compare.scores(X, y, ["self_influence"]).attrs["lsi"]["method_wall_time_s"]["self_influence"]
    assert walls["self_influence"] >= walls["loss"] * 0.5 and alone > 0


def test_load_benchmark_reads_json_or_says_what_to_run(tmp_path):
    (tmp_path / "b.json").write_text('{"speedup_per_model": 3.5}')
    assert label_noise.load_benchmark(tmp_path / "b.json") == ({"speedup_per_model": 3.5}, None)
    result, reason = label_noise.load_benchmark(tmp_path / "missing.json")
    assert result is None and "run the benchmark script" in reason


def _exact_trak(X: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """TRAK by hand, one checkpoint, no projection: ``A[i, j] = phi_i^T (Phi^T Phi)^+ phi_j (1 - p_i)``.

    ``phi_i`` is the gradient of the margin ``z_y - log sum_{c != y} exp z_c`` of sample i with
    respect to the linear probe's weights ``W`` (d+1, C); ``(1 - p_i)`` is TRAK's out-to-loss
    term. The margin's gradients sum to zero over the classes, so ``Phi^T Phi`` has rank at most
    (d+1)(C-1): the pseudo-inverse is TRAK's inverse on the span of the gradients.
    """
    Xa = np.hstack([X, np.ones((len(X), 1))])
    Z = Xa @ W
    p = np.exp(Z - Z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    rows = np.arange(len(y))
    p_y = p[rows, y]
    dz = -p / (1 - p_y)[:, None]
    dz[rows, y] = 1.0
    Phi = (Xa[:, :, None] * dz[:, None, :]).reshape(len(X), -1)
    return (Phi @ np.linalg.pinv(Phi.T @ Phi) @ Phi.T) * (1 - p_y)[:, None]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_trak_equals_an_exact_trak_by_hand(n_classes):
    """compare's TRAK (traker, projected) against the exact one on a tiny problem with more samples than
    dimensions; binary included, where the kernel of all 2(d+1) gradient coordinates is singular."""
    from lsi.probes import make_probe
    X, clean = blobs(200, 4, n_classes, seed=3, spread=0.8)
    y = flip_labels(clean, 0.1, seed=1).values
    table = compare.scores(X, y, ["trak"], trak_proj_dim=512)
    fit = compare._Fit(X, y, n_classes, 0.01, 0)
    W = fit.theta.view(5, n_classes).numpy()
    attribution = _exact_trak(X, y, W)
    np.fill_diagonal(attribution, 0.0)
    expected = -attribution.sum(1) / (len(X) - 1)
    scale = np.dot(table["trak"], expected) / np.dot(expected, expected)  # traker rescales its inverse kernel
    err = float(np.max(np.abs(table["trak"] / scale - expected)) / np.max(np.abs(expected)))
    print(f"MEASURED TRAK vs exact by hand, {n_classes} classes: max error {err:.3g} of the largest score")
    assert scale > 0 and err <= 1e-4  # measured 6.2e-6 (binary), 3.4e-5 (three classes): float32 traker
    assert table.attrs["lsi"]["trak_projector"].startswith(f"BasicProjector (rademacher, {5 * (n_classes - 1)} dims")
    assert make_probe("linear", 4, n_classes).n_params == 5 * n_classes


def test_scores_resume_from_a_checkpoint_and_carry_the_runners_identity(tmp_path):
    from executors import Counting, Interrupted, StopAfter
    from lsi import runner

    X, y = blobs(12, 3, 3)
    kw = dict(methods=["loss", "self_influence", "lsi:newton-step"], memory_budget=1)   # twelve chunks of one
    whole = compare.scores(X, y, **kw)
    with pytest.raises(Interrupted):
        compare.scores(X, y, checkpoint=tmp_path, executor=StopAfter(5), **kw)
    counting = Counting()
    resumed = compare.scores(X, y, checkpoint=tmp_path, executor=counting, **kw)
    assert counting.scored == list(range(5, 12))                              # only the missing chunks ran
    pd.testing.assert_frame_equal(resumed, whole, check_exact=True)
    identity = resumed.attrs["lsi"]["identity"]
    assert identity == whole.attrs["lsi"]["identity"] and identity["measure"] == "compare"
    assert identity["data_sha256"] == runner.fingerprint(X, y, None, None)
    assert set(resumed.attrs["lsi"]["method_wall_time_s"]) == set(kw["methods"])
    # the per-sample methods chunk by chunk equal them on the whole set at once
    together = compare.scores(X, y, methods=kw["methods"])
    np.testing.assert_allclose(together.to_numpy(), whole.to_numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="other options"):                    # other data, same folder
        compare.scores(X[::-1].copy(), y, checkpoint=tmp_path, **kw)
