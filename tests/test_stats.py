"""Chapter analyses: tier comparison, disagreements, class selection, provenance block, galleries by score."""
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import lsi
from lsi import stats
from lsi.book import plots
from lsi.data import load_dataset, select_classes
from lsi.provenance import run_record


def test_compare_tiers_aligns_on_index_and_matches_agreement():
    ref = pd.DataFrame({"index": [0, 1, 2, 3], "lsi": [1.0, 2.0, 3.0, 4.0]})
    ref.attrs["lsi"] = {"wall_time_s": 8.0, "full_data_grad_norm": 1e-12}
    sub = pd.DataFrame({"index": [3, 1], "lsi": [4.4, 1.8]})
    sub.attrs["lsi"] = {"wall_time_s": 1.0, "full_data_grad_norm": 1e-3}
    table = stats.compare_tiers({"sub": sub, "ref": ref}, ref).set_index("solver")
    assert table.loc["sub", "samples scored"] == 2 and table.loc["sub", "seconds per sample"] == 0.5
    assert table.loc["sub", "median_rel_error"] == pytest.approx(np.median([0.1, 0.1]))
    assert table.loc["sub", "max_rel_error"] == pytest.approx(0.1)
    assert table.loc["ref", "median_rel_error"] == 0 and table.loc["ref", "seconds per sample"] == 2.0


def test_disagreements_pick_high_by_one_and_low_by_the_other():
    scores = pd.DataFrame({"id": np.arange(8), "a": [8, 7, 6, 5, 4, 3, 2, 1], "b": [1, 2, 3, 4, 5, 6, 8, 7]})
    table = stats.disagreements(scores, "a", "b", k=2)
    high_a = table[table["class"] == "high a, low b"]
    assert list(high_a["id"]) == [0, 1] and list(high_a["rank"]) == [0, 1]
    assert list(table[table["class"] == "high b, low a"]["id"]) == [6, 7]
    assert (high_a["rank_pct"] == scores["a"].rank(pct=True)[[0, 1]].to_numpy()).all()


def test_select_classes_keeps_labels_ids_and_strata():
    digits = load_dataset("digits")
    pair = select_classes(digits, [4, 9])
    assert set(np.unique(pair.labels)) == {4, 9}
    assert len(pair) == int(np.isin(digits.labels, [4, 9]).sum())
    some = select_classes(digits, [4, 9], 50, seed=1)
    assert len(some) == 50 and abs(int((some.labels == 4).sum()) - 25) <= 1
    assert set(some.ids) <= set(pair.ids)
    with pytest.raises(ValueError, match="no samples"):
        select_classes(digits, [42])


def test_provenance_block_shows_the_record_and_the_wall_time():
    record = run_record("cpu", profile="ci", parameters={"n_train": 5})
    html = plots.provenance(record, data="digits").data
    for expected in ("digits", "profile", "n_train", "commit", "chapter wall time", record["commit"]):
        assert expected in html


def test_galleries_show_the_named_score():
    from PIL import Image

    frame = pd.DataFrame({"class": ["a", "a"], "end": ["lowest", "highest"], "rank": [0, 0], "id": [0, 1],
                          "index": [0, 1], "sui": [0.25, 0.75]})
    picture = plots.image_gallery(frame, lambda i: Image.new("RGB", (8, 8), "gray"), score="sui", size=16)
    assert picture.data[:4] == b"\x89PNG"
    texts = plots.text_gallery(frame, lambda i: f"text {i}", score="sui").data
    assert "<th>sui</th>" in texts and "0.75" in texts
    with pytest.raises(KeyError):
        plots.image_gallery(frame, lambda i: Image.new("RGB", (8, 8)), score="lsi")


def test_spread_across_spans_the_ranking_and_spearman_interval_brackets_it():
    scores = np.random.default_rng(0).lognormal(size=200)
    picks = stats.spread_across(scores, 30)
    assert len(picks) == 30 and scores[picks].min() == scores.min() and scores[picks].max() == scores.max()
    a = np.random.default_rng(1).normal(size=60)
    b = a + np.random.default_rng(2).normal(size=60)
    rho = stats.spearman_interval(a, b, n_resamples=300)
    assert rho["low"] < rho["spearman"] < rho["high"]
    assert rho["spearman"] == pytest.approx(spearmanr(a, b).statistic)
    with pytest.raises(ValueError, match="k =="):
        stats.spread_across(scores, 0)
    with pytest.raises(ValueError, match="paired"):
        stats.spearman_interval(a, b[:10])
