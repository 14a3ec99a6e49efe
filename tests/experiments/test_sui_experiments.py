"""SUI experiments the chapter runs: information of real retraining, the summarisation curve."""
import numpy as np
import torch

from lsi.sui import summarisation_curve
from lsi.sui.reference import loo_network_gd, retraining_information


def test_retraining_information_is_the_smoothed_squared_change():
    trained = {"weights": torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.0, -1.0]], dtype=torch.float64),
               "predictions": torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)}
    out = retraining_information(trained, sigma=2.0)
    np.testing.assert_allclose(out["weight"], [5 / 8, 1 / 8])
    np.testing.assert_allclose(out["functional"], [4 / 8, 1 / 8])


def test_retraining_information_of_a_linear_model_matches_the_closed_form():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(12, 3)))
    y = torch.tensor(rng.normal(size=(12, 1)))
    model = torch.nn.Linear(3, 1, bias=False).double()
    torch.nn.init.zeros_(model.weight)
    trained = loo_network_gd(model, x, y, [0, 5], lr=0.02, steps=4000)
    info = retraining_information(trained)
    for j, i in enumerate([0, 5]):
        keep = np.arange(12) != i
        full = np.linalg.lstsq(x.numpy(), y.numpy(), rcond=None)[0]
        loo = np.linalg.lstsq(x.numpy()[keep], y.numpy()[keep], rcond=None)[0]
        assert np.isclose(info["weight"][j], ((full - loo) ** 2).sum() / 2, rtol=1e-8)


def test_summarisation_curve_has_every_strategy_fraction_and_the_class_balance():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5))
    y = (X[:, 0] > 0).astype(int)
    Xt = rng.normal(size=(30, 5))
    yt = (Xt[:, 0] > 0).astype(int)
    table = summarisation_curve(X, y, Xt, yt, fractions=[0.0, 0.5], step=0.25, repeats=2, train_steps=20,
                                hidden=4, l2=1.0)
    assert len(table) == (1 + 2) * 2
    assert set(table["strategy"]) == {"lowest SUI first", "random"}
    full = table[table["fraction removed"] == 0.0]
    assert full["test accuracy"].nunique() == 1  # nothing removed: every strategy trains the same network
    assert ((table["largest class share"] >= 0.5) & (table["largest class share"] <= 1)).all()
    assert table.attrs["lr"] > 0
