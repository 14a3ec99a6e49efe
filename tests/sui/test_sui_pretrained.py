"""The pieces of the ``sui_pretrained`` chapter: projected Jacobians, the pretrained split,
adversarial and degraded images, SUI from a stored linearisation, summarisation variants."""
import copy

import numpy as np
import pytest
import torch
from PIL import Image

from lsi import corruptions
from lsi.stats import agreement
from lsi.sui import compute_sui, compute_sui_linearized, linearize, removal_order
from lsi.experiments.sui import detection_over_time, information_over_time, source_table, stable_lr
from lsi.sui.linearize import project


def _mlp(seed: int = 0, d: int = 5, hidden: int = 7, k: int = 2) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(),
                                   torch.nn.Linear(hidden, k)).double()


def _data(n: int = 30, d: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(size=(n, d)))
    return x, (x[:, 0] > 0).long().numpy()


@pytest.mark.parametrize("kind", ["gaussian", "sparse"])
def test_projected_jacobian_is_the_exact_jacobian_times_one_seeded_matrix(kind):
    model, (x, _) = _mlp(), _data()
    exact = linearize(model, x).jac
    r = project(torch.eye(exact.shape[1], dtype=exact.dtype), 64, 3, kind)        # R itself, (P, d)
    for batch_size in (4, 30):                                                    # same R in every batch
        projected = linearize(model, x, projection_dim=64, projection=kind, seed=3, batch_size=batch_size).jac
        torch.testing.assert_close(projected, exact @ r, rtol=1e-12, atol=1e-12)


def test_sparse_projection_has_one_signed_unit_entry_per_parameter():
    r = project(torch.eye(500, dtype=torch.float64), 40, 1, "sparse")
    assert ((r != 0).sum(1) == 1).all()
    assert set(r[r != 0].tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("kind", ["gaussian", "sparse"])
def test_projected_kernel_is_unbiased_and_its_error_shrinks_like_one_over_sqrt_d(kind):
    model, (x, _) = _mlp(hidden=60), _data(n=10)
    jac = linearize(model, x).jac
    kernel = jac @ jac.T

    def rel_error(dim: int, seed: int) -> float:
        p = project(jac, dim, seed, kind)
        return float(torch.linalg.norm(p @ p.T - kernel) / torch.linalg.norm(kernel))

    small = np.mean([rel_error(64, s) for s in range(20)])
    large = np.mean([rel_error(1024, s) for s in range(20)])
    assert large < 0.095                                   # measured 0.086 (gaussian), 0.087 (sparse)
    assert 3.8 < small / large < 4.6                       # sqrt(1024 / 64) = 4; measured 4.22, 4.21
    # unbiased: the mean of 200 draws is off by no more than the noise of one draw / sqrt(200)
    mean = sum(project(jac, 64, s, kind) @ project(jac, 64, s, kind).T for s in range(200)) / 200
    bias = float(torch.linalg.norm(mean - kernel) / torch.linalg.norm(kernel))
    assert bias < 1.2 * small / 200**0.5                   # measured 0.026 and 0.024 vs 0.0256 and 0.0258


def test_sui_from_a_large_projection_ranks_like_the_exact_sui():
    model, (x, y) = _mlp(hidden=40), _data(n=30)
    options = dict(inputs=x, t=50, lr=0.01, progress=False)
    exact = compute_sui(model, y, **options)
    projected = compute_sui(model, y, projection_dim=4096, projection="sparse", **options)
    for m in ("sui_weight", "sui_functional"):
        assert agreement(projected[m], exact[m])["spearman"] > 0.995         # measured 0.9996 / 0.9973


def test_sui_from_a_stored_linearisation_is_compute_sui():
    model, (x, y) = _mlp(), _data()
    held = torch.tensor(np.random.default_rng(5).normal(size=(8, 5)))
    direct = compute_sui(model, y, inputs=x, heldout=held, t=20, lr=0.01, progress=False)
    stored = compute_sui_linearized(linearize(model, x), y, heldout=linearize(model, held), t=20, lr=0.01,
                                    progress=False)
    for m in ("sui_weight", "sui_functional"):
        np.testing.assert_allclose(stored[m], direct[m], rtol=1e-12)


def test_take_is_the_linearisation_of_the_subset():
    model, (x, _) = _mlp(), _data()
    rows = [3, 0, 17]
    part, whole = linearize(model, x[rows]), linearize(model, x).take(rows)
    torch.testing.assert_close(whole.jac, part.jac)
    torch.testing.assert_close(whole.f0, part.f0)
    assert len(whole) == 3


def test_information_over_time_matches_single_runs_and_agreement():
    model, (x, y) = _mlp(), _data()
    lin = linearize(model, x)
    lr = stable_lr(lin.jac)
    assert lr * float(torch.linalg.eigvalsh(lin.jac @ lin.jac.T)[-1]) == pytest.approx(1.0)
    long, summary = information_over_time(lin, y, lin, [5, 50], lr=lr, indices=np.arange(0, 30, 3))
    one = compute_sui_linearized(lin, y, heldout=lin, t=50, lr=lr, l2=0.0, indices=np.arange(0, 30, 3),
                                 progress=False)
    np.testing.assert_allclose(long[long["t"] == 50]["sui_weight"], one["sui_weight"])
    row = summary.set_index("t").loc[50]
    assert row["Spearman(weight, functional)"] == pytest.approx(
        agreement(one["sui_functional"], one["sui_weight"])["spearman"])
    assert row["median weight SI"] == pytest.approx(one["sui_weight"].median())


class _Logistic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 8 * 8, 2)
        torch.nn.init.normal_(self.linear.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_pgd_stays_in_the_budget_and_the_pixel_range_and_moves_towards_the_target():
    model = _Logistic()
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x[:4] = 0.0                                             # at the border of the pixel range
    x[4:8] = 1.0
    target = 1 - model(x).argmax(1)
    eps = 4 / 255
    adv = corruptions.pgd_targeted(model, x, target, eps=eps, step=1 / 255, steps=10)
    assert float((adv - x).abs().max()) <= eps + 1e-7
    assert float((adv - x).abs().max()) == pytest.approx(eps, rel=1e-5)    # the budget is used
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert float(ce(model(adv), target)) < float(ce(model(x), target))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and model.training
    with pytest.raises(ValueError, match="eps"):
        corruptions.pgd_targeted(model, x, target, eps=-1.0)


def test_degraded_images_keep_their_size_and_change():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8))
    for kind, level in (("jpeg", 10), ("blur", 1.0)):
        (out,) = corruptions.degrade_images([image], kind, level)
        assert out.size == image.size and out.mode == "RGB"
        assert np.abs(np.asarray(out, float) - np.asarray(image, float)).mean() > 5
    blurred = np.asarray(corruptions.degrade_images([image], "blur", 1.0)[0], float)
    assert blurred.std() < np.asarray(image, float).std()    # a blur lowers the contrast of noise
    with pytest.raises(ValueError, match="kind"):
        corruptions.degrade_images([image], "rotate", 1)
    with pytest.raises(ValueError, match="quality"):
        corruptions.degrade_images([image], "jpeg", 0)


def test_source_table_takes_medians_per_source():
    table = source_table({"a": [1.0, 2.0, 3.0, 10.0]}, np.array(["x", "x", "y", "y"]))
    assert table.loc["x", "a"] == 1.5 and table.loc["y", "a"] == 6.5
    assert table.loc["x", "samples"] == 2


def test_stratified_removal_takes_every_class_in_proportion():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(60, 4))
    labels = np.r_[np.zeros(40, int), np.ones(20, int)]
    order = removal_order(features, labels, step=0.25, until=0.5, stratified=True, hidden=3, l2=1.0,
                          progress=False)
    assert sorted(order) == list(range(60))
    first = order[:15]                                      # round one: 25% of each class
    assert (labels[first] == 0).sum() == 10 and (labels[first] == 1).sum() == 5


def test_stratified_rounds_always_remove_the_requested_count():
    from lsi.sui.summarize import _round_removal

    labels = np.r_[np.zeros(5, int), np.ones(5, int), np.full(3, 2)]
    ranked = np.random.default_rng(0).permutation(13)
    for count in range(1, 13):
        drop = _round_removal(ranked, labels, count, stratified=True)
        assert len(drop) == count and len(set(drop)) == count
        shares = np.bincount(labels[drop], minlength=3)
        assert np.all(np.abs(shares - count * np.array([5, 5, 3]) / 13) < 1)   # within one of proportional
    np.testing.assert_array_equal(_round_removal(ranked, labels, 4, stratified=False), ranked[:4])


def test_largest_first_starts_from_the_most_informative_sample():
    rng = np.random.default_rng(3)
    features, labels = rng.normal(size=(30, 4)), np.arange(30) % 2
    options = dict(hidden=3, l2=1.0, progress=False)
    scores = compute_sui(features, labels, heldout=features, **options)["sui_functional"].to_numpy()
    order = removal_order(features, labels, step=0.1, until=0.2, largest_first=True, heldout=features,
                          **options)
    assert order[0] == int(np.argmax(scores))


def test_summarisation_variants_stack_and_reuse_rankings():
    from lsi.sui import summarisation_variants

    rng = np.random.default_rng(4)
    X, Xt = rng.normal(size=(40, 5)), rng.normal(size=(20, 5))
    y, yt = (X[:, 0] > 0).astype(int), (Xt[:, 0] > 0).astype(int)
    variants = {"base": {}, "stratified": {"stratified": True}, "longer": {"reuse": "base", "train_steps": 30}}
    table = summarisation_variants(X, y, Xt, yt, variants, fractions=[0.0, 0.5], step=0.25, repeats=1,
                                   train_steps=10, hidden=4, l2=1.0)
    assert list(table["variant"].unique()) == list(variants)
    assert len(table) == 3 * (1 + 1) * 2
    rankings = table.attrs["rankings"]
    np.testing.assert_array_equal(rankings["longer"], rankings["base"])
    assert sorted(rankings["stratified"]) == list(range(40))


def test_detection_over_time_scores_the_last_time_and_every_auroc():
    from lsi.stats import separation

    model, (x, y) = _mlp(), _data()
    lin = linearize(model, x)
    positive = np.arange(30) < 5
    table, last = detection_over_time(lin, y, lin, [5, 40], positive, lr=stable_lr(lin.jac))
    assert list(table["t"]) == [5, 40]
    one = compute_sui_linearized(lin, y, heldout=lin, t=40, lr=stable_lr(lin.jac), l2=0.0, progress=False)
    np.testing.assert_allclose(last["sui_functional"], one["sui_functional"])
    assert table["AUROC sui_weight"].iloc[-1] == pytest.approx(separation(one["sui_weight"], positive)["auroc"])


def test_pretrained_split_recomposes_the_imagenet_network():
    from lsi.features.extractors import efficientnet_lite0_classifier
    from lsi.features.preprocessing import IMAGENET_MEAN, IMAGENET_STD
    from lsi.sui import pretrained

    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    full = efficientnet_lite0_classifier()
    normalised = (pixels - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        expected = full.extract_features(normalised).mean(dim=(2, 3))
        for blocks in (0, 2):
            trunk, tail = pretrained.split_efficientnet_lite0(blocks, seed=3)
            torch.testing.assert_close(tail.features(trunk(pixels)), expected, rtol=1e-5, atol=1e-5)
    trainable = {name.split(".")[0] for name, p in tail.named_parameters() if p.requires_grad}
    assert trainable == {"blocks", "head", "fc"} and not any(p.requires_grad for p in trunk.parameters())
    again = pretrained.split_efficientnet_lite0(2, seed=3)[1]
    assert torch.equal(again.fc.weight, tail.fc.weight)                       # the new layer is seeded
    bound = 1280 ** -0.5
    assert float(tail.fc.weight.detach().abs().max()) <= bound


def test_resnet18_split_recomposes_the_network():
    from torchvision.models import resnet18

    from lsi.features.preprocessing import IMAGENET_MEAN, IMAGENET_STD
    from lsi.sui import pretrained

    net = resnet18(weights=None).eval()          # the ImageNet weights need a download; the cut is the same
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    normalised = (pixels - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    pooled = copy.deepcopy(net)
    pooled.fc = torch.nn.Identity()
    with torch.no_grad():
        expected = pooled(normalised)
        for blocks in (0, 1, 8):
            trunk, tail = pretrained.split_resnet18(blocks, seed=3, net=net)
            assert len(tail.blocks) == blocks and len(trunk.blocks) == 8 - blocks
            torch.testing.assert_close(tail.features(trunk(pixels)), expected, rtol=1e-5, atol=1e-5)
    assert tail.fc.in_features == net.fc.in_features == 512 and float(tail.fc.weight.abs().max()) <= 512 ** -0.5
    with pytest.raises(ValueError, match="between 0 and 8"):
        pretrained.split_resnet18(9, net=net)
    with pytest.raises(ValueError, match="resnet18"):
        pretrained.split("resnet50")


def test_fit_head_is_ridge_regression_on_the_pooled_features():
    from lsi.sui import pretrained

    trunk, tail = pretrained.split_efficientnet_lite0(0, seed=0)
    acts = pretrained.trunk_activations(trunk, torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    labels = np.arange(12) % 2
    fitted = pretrained.fit_head(tail, acts, labels, l2=3.0)
    f = np.hstack([pretrained.pooled_features(tail, acts), np.ones((12, 1))])
    coef = np.linalg.solve(f.T @ f + 3.0 * np.eye(f.shape[1]), f.T @ np.eye(2)[labels])
    np.testing.assert_allclose(fitted.fc.weight.detach().double().numpy(), coef[:-1].T, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fitted.fc.bias.detach().double().numpy(), coef[-1], rtol=1e-4, atol=1e-6)
    assert not torch.equal(fitted.fc.weight, tail.fc.weight)                   # the original is untouched
