"""The experiment drivers of lsi.experiments, on small synthetic data with hand-checkable answers."""
import numpy as np
import pandas as pd
import pytest
import torch

import lsi
import lsi.corruptions
from core_data import blobs
from lsi import claims, experiments
from lsi.data import availability


def test_nested_order_keeps_the_scored_samples_first_and_stratified():
    labels = np.repeat([0, 1, 2], 20)
    order = experiments.nested_order(labels, 9, seed=1)
    assert sorted(order.tolist()) == list(range(60))
    assert np.bincount(labels[order[:9]]).tolist() == [3, 3, 3]
    assert set(order[:9]) == set(experiments.nested_order(labels, 9, seed=1)[:9])


def test_lsi_vs_size_scores_the_same_samples_and_matches_a_direct_run():
    X, y = blobs(120, 3, 3, seed=4)
    table = experiments.lsi_vs_size(X, y, [30, 120], n_scored=30, seeds=[0])
    assert len({tuple(sorted(group["id"])) for _, group in table.groupby("n")}) == 1
    order = experiments.nested_order(y, 30, seed=0)
    direct = lsi.compute_lsi(X[order], y[order], indices=np.arange(30), progress=False)
    np.testing.assert_allclose(table[table["n"] == 120]["lsi"].to_numpy(), direct["lsi"].to_numpy(), rtol=1e-12)
    assert table.attrs["n_params"] == 12


def test_regime_slopes_recover_known_power_laws():
    n = np.array([100, 200, 400, 1000, 4000, 8000, 16000])
    values = np.where(n <= 400, 3.0 * n ** -0.3, 3.0 * 400 ** 0.7 * n ** -1.0)
    slopes = experiments.regime_slopes(pd.DataFrame({"n": n, "lsi": values}), n_params=400)
    assert slopes["below"] == pytest.approx(-0.3) and slopes["far_above"] == pytest.approx(-1.0)
    assert slopes["below_sizes"] == 3 and slopes["far_above_sizes"] == 3
    assert np.isnan(experiments.regime_slopes(pd.DataFrame({"n": n, "lsi": values}), n_params=5000)["far_above"])


def test_feature_noise_sweep_runs_one_set_per_variance():
    X, y = blobs(90, 3, 3, seed=5)
    sweep = experiments.feature_noise_sweep(X, y, 2, [0.0, 4.0])
    assert (sweep["noisy"] == (sweep["label"] == 2)).all() and len(sweep) == 180
    noisy = lsi.compute_lsi(lsi.corruptions.add_feature_noise(X, y, 2, 4.0).values, y, progress=False)
    np.testing.assert_allclose(sweep[sweep["variance"] == 4]["lsi"].to_numpy(), noisy["lsi"].to_numpy())
    clean = lsi.compute_lsi(X, y, progress=False)
    np.testing.assert_allclose(sweep[sweep["variance"] == 0]["lsi"].to_numpy(), clean["lsi"].to_numpy())


def test_label_flip_run_flags_exactly_the_flipped_samples():
    X, y = blobs(60, 3, 3, seed=6)
    table = experiments.label_flip_run(X, y, 0.1, seed=2)
    assert table["flipped"].sum() == 6
    assert ((table["label"] != table["clean_label"]) == table["flipped"]).all()


def test_binary_task_is_balanced_disjoint_and_probe_accuracy_is_exact():
    labels = np.repeat(np.arange(4), 50)
    train, test, binary = experiments.binary_task(labels, [0, 1], [2, 3], 40, 60, seed=0)
    assert len(train) == 40 and len(test) == 60 and not set(train) & set(test)
    assert np.bincount(binary[train]).tolist() == [20, 20] and np.bincount(binary[test]).tolist() == [30, 30]
    X, y = blobs(80, 2, 2, seed=7, spread=0.1)
    result = experiments.probe_accuracy(X[:40], y[:40], X[40:], y[40:])
    assert result["train_accuracy"] == 1.0 and result["test_accuracy"] == 1.0
    shuffled = experiments.probe_accuracy(X[:40], y[:40], X[40:], 1 - y[40:])
    assert shuffled["test_accuracy"] == 0.0


def test_median_intervals_and_top_overlap():
    frame = experiments.median_intervals({"a": [1, 2, 3, 4, 5], "b": [10, 10, 10]})
    assert frame["median"].tolist() == [3.0, 10.0] and frame.loc[1, "low"] == frame.loc[1, "high"] == 10.0
    assert frame.loc[0, "low"] <= 3 <= frame.loc[0, "high"]
    assert experiments.top_overlap(np.arange(20), np.arange(20), 0.1) == 1.0
    assert experiments.top_overlap(np.arange(20), -np.arange(20), 0.1) == 0.0
    assert experiments.top_overlap([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 10, 0], 0.2) == 0.5


def test_availability_says_how_to_get_missing_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LSI_DOWNLOADS", str(tmp_path))
    note = availability("imagenette", root=tmp_path / "empty")
    assert "imagenette2-320.tgz" in note and str(tmp_path) in note
    assert availability("digits") is None


def test_separation_by_group_matches_separation_inside_each_group():
    from lsi import stats

    frame = pd.DataFrame({"lsi": [1, 2, 3, 10, 5, 6, 7, 1], "flipped": [0, 0, 0, 1, 0, 0, 1, 1],
                          "label": [0, 0, 0, 0, 1, 1, 1, 1]}).astype({"flipped": bool})
    table = stats.separation_by(frame, "flipped", "label", names=["a", "b"])
    assert table.loc["a", "auroc"] == 1.0 and table.loc["a", "above_max_negative"] == 1.0
    assert table.loc["b", "auroc"] == 0.5 and table.loc["b", "above_max_negative"] == 0.5


def test_compare_rankings_against_hand_values():
    table = experiments.compare_rankings({"ref": [1, 2, 3, 4], "same": [2, 4, 6, 8], "reverse": [4, 3, 2, 1]},
                                         "ref", fraction=0.25)
    assert table.loc["same", "spearman"] == pytest.approx(1.0) and table.loc["reverse", "spearman"] == pytest.approx(-1)
    assert table.loc["same", "top 25% overlap"] == 1.0 and table.loc["reverse", "top 25% overlap"] == 0.0
    assert table.loc["same", "median relative difference"] == pytest.approx(1.0)


def test_aligned_matches_rows_by_id_not_position_and_refuses_what_it_cannot_align():
    first = pd.DataFrame({"id": [3, 1, 2], "lsi": [30.0, 10.0, 20.0]})
    second = pd.DataFrame({"id": [1, 2, 4], "lsi": [1.0, 2.0, 4.0], "label": [0, 1, 0]})
    frame = experiments.aligned({"a": first, "b": second})
    assert list(frame.columns) == ["a", "b"] and sorted(frame.index) == [1, 2]
    assert frame.loc[1].tolist() == [10.0, 1.0] and frame.loc[2].tolist() == [20.0, 2.0]
    assert experiments.aligned({"b": second}, column="label").loc[2, "b"] == 1
    with pytest.raises(ValueError, match="has no column"):
        experiments.aligned({"a": first.drop(columns="id")})
    with pytest.raises(ValueError, match="twice"):
        experiments.aligned({"a": pd.concat([first, first])})
    with pytest.raises(ValueError, match="share no"):
        experiments.aligned({"a": first, "c": second.assign(id=[7, 8, 9])})


@pytest.mark.parametrize("slope, words", [(-1.0, "about 1/n"), (-1.17, "about 1/n"), (-0.83, "about 1/n"),
                                          (-0.71, "flatter than 1/n"), (-0.6, "flatter than 1/n"),
                                          (0.16, "not falling with n"), (-1.18, "steeper than 1/n"),
                                          (float("nan"), "not measured")])
def test_slope_words_on_both_sides_of_the_tolerance(slope, words):
    assert experiments.slope_words(slope).startswith(words)


def test_lsi_subsets_are_equal_stratified_thirds_by_class_order():
    labels = np.repeat([0, 1, 2], [9, 10, 11])
    scores = np.random.default_rng(0).permutation(len(labels)).astype(float)
    subsets = experiments.lsi_subsets(scores, labels, seed=1)
    assert {name: len(p) for name, p in subsets.items()} == {"low": 9, "mid": 9, "high": 9, "random": 9}
    for c in range(3):
        low, mid, high = (scores[p][labels[p] == c] for p in (subsets["low"], subsets["mid"], subsets["high"]))
        assert len(low) == len(mid) == len(high) == 3
        assert low.max() < mid.min() and mid.max() < high.min()
        assert high.max() == scores[labels == c].max() and low.min() == scores[labels == c].min()
    assert not set(subsets["low"]) & set(subsets["mid"]) and not set(subsets["mid"]) & set(subsets["high"])
    assert np.array_equal(subsets["random"], experiments.lsi_subsets(scores, labels, seed=1)["random"])
    with pytest.raises(ValueError, match="one score per labelled sample"):
        experiments.lsi_subsets(scores[:-1], labels)


def _learnability_data(n: int = 60, n_test: int = 30, n_classes: int = 3):
    """Scores, labels, 5-d features and flattened 32 px pixels of ``n`` training and ``n_test`` test samples."""
    rng = np.random.default_rng(7)
    labels, test_labels = np.arange(n) % n_classes, np.arange(n_test) % n_classes
    features = rng.normal(size=(n, 5)) + labels[:, None]
    test_features = rng.normal(size=(n_test, 5)) + test_labels[:, None]
    return dict(scores=rng.permutation(n).astype(float), labels=labels, features=features,
                pixels=rng.uniform(size=(n, 3072)), test_features=test_features,
                test_pixels=rng.uniform(size=(n_test, 3072)), test_labels=test_labels)


LEARN = dict(models=["probe", "small_cnn"], widths={"small_cnn": (2, 2, 2)}, epochs=2, batch_size=8, lr=0.01)


def test_learnability_equals_a_loop_over_subsets_models_and_seeds():
    data = _learnability_data()
    runs = experiments.learnability(**data, seeds=[0, 1], **LEARN)
    assert len(runs) == 2 * 4 * 2 and set(runs["n"]) == {18}
    np.testing.assert_allclose(runs["gap"], runs["train_accuracy"] - runs["test_accuracy"])
    for seed in (0, 1):  # the independent check: each model trained on its own
        parts = experiments.lsi_subsets(data["scores"], data["labels"], seed=seed)
        for subset, p in parts.items():
            row = runs.set_index(["model", "subset", "seed"]).loc[("small_cnn", subset, seed)]
            alone = lsi.networks.train_and_evaluate("small_cnn", data["pixels"][p], data["labels"][p],
                                                    data["test_pixels"], data["test_labels"], n_classes=3,
                                                    width=(2, 2, 2), seed=seed, epochs=2, batch_size=8, lr=0.01)
            probe = experiments.probe_accuracy(data["features"][p], data["labels"][p], data["test_features"],
                                               data["test_labels"])
            assert (row["train_accuracy"], row["test_accuracy"]) == (alone["train_accuracy"], alone["test_accuracy"])
            probe_row = runs.set_index(["model", "subset", "seed"]).loc[("probe", subset, seed)]
            assert (probe_row["train_accuracy"], probe_row["test_accuracy"]) == (probe["train_accuracy"],
                                                                                 probe["test_accuracy"])


def test_seed_intervals_and_by_subset_summarise_the_seeds():
    runs = pd.DataFrame([{"model": m, "subset": s, "seed": seed, "train_accuracy": 0.1 * seed + i,
                          "test_accuracy": 0.5, "gap": 0.1 * seed + i - 0.5}
                         for m in ("probe", "mlp") for i, s in enumerate(experiments.SUBSETS) for seed in (0, 1, 2)])
    assert experiments.by_subset(runs, "mlp", "train_accuracy")["mid"].tolist() == [1.0, 1.1, 1.2]
    table = experiments.seed_intervals(runs)
    assert len(table) == 2 * 3 * 4
    high = table.set_index(["model", "metric", "subset"]).loc[("probe", "train_accuracy", "high")]
    assert high["median"] == pytest.approx(2.1) and high["low"] <= 2.1 <= high["high"] and high["n"] == 3
    with pytest.raises(ValueError, match="no runs"):
        experiments.by_subset(runs, "resnet9", "gap")


def test_learnability_cost_counts_the_small_cnn_by_hand():
    forward = 2 * (16 * 32 * 32 * 27 + 32 * 16 * 16 * 144 + 64 * 8 * 8 * 288 + 10 * 1024)  # three convs and the head
    cost = experiments.learnability_cost(["small_cnn"], n_subset=100, n_test=50, epochs=2, runs=3, tflops=2.0)
    total = forward * (3 * 2 * 100 + 100 + 50) * 3
    assert cost.loc["small_cnn", "forward_gflop"] == pytest.approx(forward / 1e9, rel=1e-12)
    assert cost.loc["small_cnn", "total_pflop"] == pytest.approx(total / 1e15, rel=1e-12)
    assert cost.loc["small_cnn", "hours"] == pytest.approx(total / 2e12 / 3600, rel=1e-12)


@pytest.mark.slow  # 3-7 min here under load (issue 23: make test-fast stays short)
def test_score_probes_reports_why_a_tier_does_not_apply():
    """A GELU MLP with more parameters (2,410) than samples (40) on noise: the converged tier cannot certify
    its optimum, so score_probes returns the solver's reason for it and the linear probe's scores as they are."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 64))
    y = rng.integers(0, 10, 40)
    linear = dict(solver="converged", weight_decay=0.01, progress=False)
    scores, reasons = experiments.score_probes(X, y, {
        "linear": linear, "gelu": dict(probe="mlp", hidden=32, activation="gelu", solver="converged",
                                       weight_decay=0.01, progress=False)})
    assert list(scores) == ["linear"] and list(reasons) == ["gelu"]
    assert "solver='gd'" in reasons["gelu"]
    pd.testing.assert_frame_equal(scores["linear"].drop(columns="seconds", errors="ignore"),
                                  lsi.compute_lsi(X, y, **linear).drop(columns="seconds", errors="ignore"))


def test_lsi_during_training_snapshots_are_the_states_of_one_longer_run():
    X, y = blobs(60, 3, 3, seed=5)
    options = dict(indices=np.arange(12), lr=0.1, progress=False)
    table = experiments.lsi_during_training(X, y, [20, 5], **options)
    assert sorted(table["epoch"].unique()) == [5, 20] and len(table) == 24
    direct = lsi.compute_lsi(X, y, solver="gd", epochs=5, **options)
    np.testing.assert_array_equal(table[table["epoch"] == 5]["lsi"].to_numpy(), direct["lsi"].to_numpy())
    # the premise: the state after 5 steps of a 20-step run is the 5-step run's (constant step, shared init)
    probe, w = lsi.probes.LinearProbe(3, 3), torch.ones(1, 60, dtype=torch.float64)
    Xt, Yt = torch.as_tensor(X), torch.as_tensor(y)
    theta0 = probe.init(0, dtype=torch.float64, device="cpu")
    steps = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
    states = {}
    lsi.training.train_gd(probe, theta0, Xt, Yt, w, epochs=20, **steps,
                          callback=lambda epoch, theta: states.setdefault(epoch + 1, theta.clone()))
    short = lsi.training.train_gd(probe, theta0, Xt, Yt, w, epochs=5, **steps)
    torch.testing.assert_close(states[5], short, rtol=0, atol=0)
    with pytest.raises(ValueError, match="gd tier"):
        experiments.lsi_during_training(X, y, [5], solver="converged")
    with pytest.raises(ValueError, match="training lengths"):
        experiments.lsi_during_training(X, y, [0, 5])


def test_rankings_over_training_against_hand_values():
    table = pd.DataFrame({"epoch": [1, 1, 1, 1, 2, 2, 2, 2], "index": [0, 1, 2, 3, 0, 1, 2, 3],
                          "lsi": [4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 5.0]})
    reference = pd.Series([1.0, 2.0, 3.0, 4.0], index=[0, 1, 2, 3])
    agreement = experiments.rankings_over_training(table, reference, fraction=0.25)
    assert agreement.loc[1, "spearman"] == pytest.approx(-1.0) and agreement.loc[2, "spearman"] == pytest.approx(1.0)
    assert agreement.loc[1, "top 25% overlap"] == 0.0 and agreement.loc[2, "top 25% overlap"] == 1.0
    assert agreement.loc[2, "median relative difference"] == pytest.approx(0.0)  # |1-1|, |2-2|, |3-3|, |5-4|/4
    with pytest.raises(ValueError, match="no LSI for samples"):
        experiments.rankings_over_training(table, reference.iloc[:2])


def test_lsi_with_notes_returns_the_warm_start_warning_as_a_note():
    X, y = blobs(40, 3, 2, seed=6)
    options = dict(probe="mlp", hidden=4, indices=np.arange(3), epochs=2, tol=1e-12, progress=False)
    table, notes = experiments.lsi_with_notes(X, y, solver="warm-start", **options)
    assert len(table) == 3 and len(notes) == 1 and "stopped at gradient norm" in notes[0]
    quiet, none = experiments.lsi_with_notes(X, y, solver="gd", **options)
    assert none == [] and len(quiet) == 3


def test_scaling_claims_judge_each_regime_on_its_own():
    """K = 100: sizes 20, 50, 100 lie below it, 400 and up far above it (FAR_ABOVE = 4)."""
    n = np.array([20, 50, 100, 400, 1000, 4000])
    lsi = np.where(n <= 100, 0.5 * n ** 0.16, 30.0 / n)   # rising below K, exactly 1/n far above it
    rows = experiments.scaling_claims(pd.DataFrame({"n": n, "lsi": lsi}), 100, label="toy")
    below, far = rows
    assert "n <= K" in below.claim and below.verdict.status == "no" and "log-log slope 0.16" in below.verdict.detail
    assert "n >= 4 K" in far.claim and far.verdict.status == "yes"
    two = experiments.scaling_claims(pd.DataFrame({"n": [20, 50, 400, 1000], "lsi": [1.0, 0.4, 0.1, 0.04]}), 100,
                                     label="toy")
    assert [r.verdict.status for r in two] == ["cannot tell", "cannot tell"]
    assert experiments.in_regime([100, 399, 400], 100, "far_above").tolist() == [False, False, True]
    with pytest.raises(ValueError, match="regime"):
        experiments.in_regime([1], 1, "middle")


def test_learnability_replicates_vary_the_drawn_samples():
    """With draw < 1 each seed trains on other samples, so even the exact probe's replicates differ;
    with draw = 1 they are identical, and replicates_differ says so."""
    data = _learnability_data()
    same = experiments.learnability(**data, seeds=[0, 1], models=["probe"])
    assert not experiments.replicates_differ(same, "probe", "test_accuracy").holds
    drawn = experiments.learnability(**data, seeds=[0, 1], models=["probe"], draw=0.5)
    assert experiments.replicates_differ(drawn, "probe", "test_accuracy").holds and set(drawn["n"]) == {9}
    for seed in (0, 1):  # the independent check: the draw, then the thirds of the drawn samples
        pool = np.sort(lsi.data.stratified_positions(data["labels"], 30, seed=seed))
        low = pool[experiments.lsi_subsets(data["scores"][pool], data["labels"][pool], seed=seed)["low"]]
        probe = experiments.probe_accuracy(data["features"][low], data["labels"][low], data["test_features"],
                                           data["test_labels"])
        row = drawn.set_index(["model", "subset", "seed"]).loc[("probe", "low", seed)]
        assert row["test_accuracy"] == probe["test_accuracy"]
    with pytest.raises(ValueError, match="draw"):
        experiments.learnability(**data, seeds=[0], models=["probe"], draw=0.0)


def test_table1_claims_are_gated_on_convergence():
    """Table 1 from three score columns; a network that has not converged gets cannot tell, whatever its numbers."""
    rng = np.random.default_rng(3)
    base = rng.lognormal(size=60)
    scores = pd.DataFrame({"all parameters": base, "last layer": base * rng.lognormal(0, 0.05, 60),
                           "probe": rng.lognormal(size=60)})
    found = experiments.table1(scores, seed=0)
    assert set(found) == set(experiments.PAPER_TABLE1)
    assert found["last layer", "all parameters"].rho > 0.9 and abs(found["probe", "all parameters"].rho) < 0.4
    rows = experiments.table1_claims({"smooth": (found, claims.converged(1e-7, tol=1e-6), "converged"),
                                      "relu": (found, claims.converged(0.287, tol=1e-6), "gd")}, tol=1e-6)
    status = {(r.claim.split("; ")[-1], r.claim.split(" (App")[0]): r.verdict.status for r in rows}
    assert status["smooth.", "LSI on the last layer ranks samples like LSI on all parameters"] == "yes"
    assert status["smooth.", "LSI on the probe ranks samples like LSI on all the CNN's parameters"] == "no"
    assert {s for (net, _), s in status.items() if net == "relu."} == {"cannot tell"}
    frame = experiments.table1_frame({"retrained": found})
    assert len(frame) == 3 and (frame["95% low"] <= frame["Spearman"]).all()


def test_table1_claims_of_a_network_not_measured_say_cannot_tell_with_the_reason():
    unconverged = claims.converged(0.115, tol=1e-6, what="the smooth CNNs")
    rows = experiments.table1_claims({"smooth": (None, unconverged, "converged")}, tol=1e-6)
    assert len(rows) == 3 and {r.verdict.status for r in rows} == {"cannot tell"}
    assert all("0.115" in r.verdict.detail and r.ours.startswith("not measured") for r in rows)
    with pytest.raises(ValueError, match="no correlations"):
        experiments.table1_claims({"smooth": (None, claims.converged(1e-7, tol=1e-6), "converged")}, tol=1e-6)


def test_certified_leave_one_out_solves_left_out_networks_only_from_a_certified_minimum():
    """From a certified full-data minimum: the exact table, gated on every network's gradient norm and on whether
    the norms pin the networks down; from an uncertified network, the zero network or a saddle: nothing solved,
    and the gate says which."""
    from lsi import networks
    generator = torch.Generator().manual_seed(5)
    X, y = torch.rand(8, 3, 32, 32, generator=generator, dtype=torch.float64), torch.arange(8) % 2
    net = networks.build("smooth_cnn", n_classes=2, width=(2, 2, 2), seed=0)
    fitted, info = networks.fit_certified(net, X, y, weight_decay=0.001, tol=1e-9, lbfgs_steps=300)
    assert info["reached_tol"] and not info["trivial"]
    mu = networks.smallest_hessian_eigenvalue(fitted, X, y, weight_decay=0.001)
    solve = lambda fit, eigenvalue: experiments.certified_leave_one_out(
        fitted, fit, X, y, [1, 6], weight_decay=0.001, tol=1e-9, smallest_eigenvalue=eigenvalue)
    table, gate = solve(info, mu)
    assert gate.holds and list(table["index"]) == [1, 6] and (table["lsi_last_layer"] <= table["lsi"]).all()
    bound = (table["grad_norm"] + info["grad_norm"]) / table["displacement"]
    flat = bound.max() / claims.DETERMINED_FRACTION / 2      # an eigenvalue at which the same norms are too loose
    table, gate = solve(info, flat)
    assert table is not None and not gate.holds and "left out are not determined" in gate.why
    for fit, eigenvalue, reason in [({**info, "grad_norm": 3e-4, "reached_tol": False}, mu, "0.0003"),
                                    ({**info, "trivial": True, "objective": float(np.log(2))}, mu, "0.693147"),
                                    (info, -1e-5, "not a minimum")]:
        table, gate = solve(fit, eigenvalue)
        assert table is None and not gate.holds and reason in gate.why and "full-data" in gate.why
