"""The corruptions the paper studies; every one is seeded and reports what it changed.

* :func:`flip_labels` - a fraction of labels (10% by default) moved uniformly to
  *another* class: the new label is ``(y + k) mod C`` with ``k`` uniform on ``1..C-1``.
* :func:`add_lorem_ipsum` - ``n`` lorem-ipsum paragraphs (5,000 by default),
  generated locally, appended to a text set with uniformly random labels.
* :func:`add_feature_noise` - additive Gaussian noise ``N(0, variance * I)`` on
  the feature vectors of one class.
* :func:`human_labels` - the CIFAR-10N human labels (``aggre``, ``worse``,
  ``random1..3``) in place of the clean CIFAR-10 ones.
* :func:`degrade_images` - images of a worse source: JPEG at a low quality, or a
  Gaussian blur (the SUI paper's comparison of data sources).
* :func:`pgd_targeted` - adversarial images: targeted projected gradient descent
  in the L-infinity ball around each image (the SUI paper's adversarial examples).
* :func:`shuffle_captions` - image-caption pairs given the caption of another image.

Each returns the corrupted values and ``changed``, the sorted positions that
differ from the input (or, for lorem ipsum, the positions of the added rows).
:func:`parse_corruption` turns the command-line form (``"flip:0.1"``,
``"lorem:5000"``, ``"noise:2:0.5"``, ``"human:worse"``) into a canonical dict.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

LOREM_WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris "
    "nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse "
    "cillum eu fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui "
    "officia deserunt mollit anim id est laborum"
).split()


class Corrupted(NamedTuple):
    """Corrupted values and the sorted positions that were changed."""

    values: np.ndarray
    changed: np.ndarray


class AddedTexts(NamedTuple):
    """A text set with extra samples: all texts, all labels, and the positions added."""

    texts: list[str]
    labels: np.ndarray
    changed: np.ndarray


def _n_classes(labels: np.ndarray, n_classes: int | None) -> int:
    classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    if classes < 2:
        raise ValueError(f"n_classes == {classes}; a corruption of labels needs at least 2 classes.")
    return classes


def flip_labels(labels: Sequence[int], fraction: float = 0.1, *, n_classes: int | None = None,
                seed: int = 0) -> Corrupted:
    """Flip ``round(fraction * n)`` labels, chosen uniformly, each to a uniformly drawn other class."""
    labels = np.asarray(labels, dtype=np.int64)
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction == {fraction}, must lie in [0, 1].")
    classes = _n_classes(labels, n_classes)
    rng = np.random.default_rng(seed)
    changed = np.sort(rng.choice(len(labels), size=int(round(fraction * len(labels))), replace=False))
    flipped = labels.copy()
    flipped[changed] = (labels[changed] + rng.integers(1, classes, size=len(changed))) % classes
    return Corrupted(flipped, changed.astype(np.int64))


def lorem_paragraph(rng: np.random.Generator) -> str:
    """One paragraph of 3-7 sentences of 6-15 lorem-ipsum words."""
    sentences = []
    for _ in range(rng.integers(3, 8)):
        words = rng.choice(LOREM_WORDS, size=rng.integers(6, 16))
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


def add_lorem_ipsum(texts: Sequence[str], labels: Sequence[int], n: int = 5000, *,
                    n_classes: int | None = None, seed: int = 0) -> AddedTexts:
    """Append ``n`` generated lorem-ipsum paragraphs with uniformly random labels."""
    labels = np.asarray(labels, dtype=np.int64)
    if int(n) < 0:
        raise ValueError(f"n == {n}, must be >= 0.")
    classes = _n_classes(labels, n_classes)
    rng = np.random.default_rng(seed)
    extra = [lorem_paragraph(rng) for _ in range(int(n))]
    extra_labels = rng.integers(0, classes, size=int(n))
    return AddedTexts(list(texts) + extra, np.concatenate([labels, extra_labels]),
                      np.arange(len(labels), len(labels) + int(n), dtype=np.int64))


def add_feature_noise(features: np.ndarray, labels: Sequence[int], target_class: int,
                      variance: float, *, seed: int = 0) -> Corrupted:
    """Add ``N(0, variance)`` noise to every coordinate of the rows whose label is ``target_class``."""
    features = np.asarray(features)
    labels = np.asarray(labels, dtype=np.int64)
    if float(variance) < 0:
        raise ValueError(f"variance == {variance}, must be >= 0.")
    changed = np.flatnonzero(labels == int(target_class))
    if len(changed) == 0:
        raise ValueError(f"No sample has label {target_class}; labels present: {np.unique(labels).tolist()}.")
    rng = np.random.default_rng(seed)
    noisy = features.copy()
    noise = rng.normal(0.0, np.sqrt(float(variance)), size=(len(changed), features.shape[1]))
    noisy[changed] += noise.astype(features.dtype)
    return Corrupted(noisy, changed.astype(np.int64))


def human_labels(ids: Sequence[int], label_set: str = "aggre", *, root: Any = None) -> Corrupted:
    """CIFAR-10N ``label_set`` labels of the CIFAR-10 training images with row indices ``ids``.

    ``changed`` marks where the human label differs from the clean one.
    """
    from .data.images import cifar10n_key, read_cifar10n
    from .data.sources import data_root

    ids = np.asarray(ids)
    table = read_cifar10n(data_root(root))
    n = len(table["clean_label"])
    if ids.dtype.kind not in "iu" or (len(ids) and (ids.min() < 0 or ids.max() >= n)):
        raise ValueError(f"human_labels needs CIFAR-10 training row indices (0..{n - 1}) as ids; "
                         f"got {ids[:3].tolist()}.")
    noisy = table[cifar10n_key(label_set)][ids]
    return Corrupted(noisy, np.flatnonzero(noisy != table["clean_label"][ids]).astype(np.int64))


_FIELDS = {"flip": ("fraction",), "lorem": ("n",), "noise": ("target_class", "variance"),
           "human": ("label_set",)}
_DEFAULTS = {"flip": {"fraction": 0.1}, "lorem": {"n": 5000}, "noise": {}, "human": {"label_set": "aggre"}}


def parse_corruption(spec: str | dict | None, *, seed: int = 0) -> dict | None:
    """Canonical dict ``{"kind": …, <parameters>, "seed": …}`` for a corruption, or None.

    Strings: ``flip[:fraction]``, ``lorem[:n]``, ``noise:class:variance``, ``human[:label_set]``.
    """
    if spec is None or spec == "" or spec == "none":
        return None
    if isinstance(spec, str):
        kind, *values = spec.split(":")
        spec = {"kind": kind, **dict(zip(_FIELDS.get(kind, ()), values))}
        if kind in _FIELDS and len(values) > len(_FIELDS[kind]):
            raise ValueError(f"corruption {kind!r} takes at most {len(_FIELDS[kind])} values, got {values}.")
    spec = dict(spec)
    kind = spec.get("kind")
    if kind not in _FIELDS:
        raise ValueError(f"Unknown corruption {kind!r}; choose one of {', '.join(_FIELDS)} "
                         "(e.g. 'flip:0.1', 'lorem:5000', 'noise:2:0.5', 'human:aggre').")
    out = {"kind": kind, **_DEFAULTS[kind], **{k: v for k, v in spec.items() if k != "kind"}}
    missing = [f for f in _FIELDS[kind] if f not in out]
    if missing:
        raise ValueError(f"corruption {kind!r} needs {missing}, e.g. 'noise:2:0.5' (class 2, variance 0.5).")
    casts = {"fraction": float, "n": int, "target_class": int, "variance": float, "label_set": str}
    out = {k: casts.get(k, lambda v: v)(v) for k, v in out.items()}
    out["seed"] = int(out.get("seed", seed))
    return out


def degrade_images(images: Sequence[Any], kind: str = "jpeg", level: float = 10) -> list:
    """PIL images of a degraded source: ``"jpeg"`` re-encoded at quality ``level`` (1-95), or
    ``"blur"`` with a Gaussian blur of radius ``level`` pixels. Deterministic."""
    import io

    from PIL import Image, ImageFilter

    def jpeg(image):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=int(level))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    kinds = {"jpeg": jpeg, "blur": lambda image: image.convert("RGB").filter(ImageFilter.GaussianBlur(level))}
    if kind not in kinds:
        raise ValueError(f"kind={kind!r} is not valid; choose one of {', '.join(map(repr, kinds))}.")
    if kind == "jpeg" and not 1 <= level <= 95:
        raise ValueError(f"JPEG quality {level} must be between 1 and 95.")
    return [kinds[kind](image) for image in images]


def pgd_targeted(model, pixels, targets, *, eps: float = 4 / 255, step: float = 1 / 255, steps: int = 10):
    """Targeted L-infinity PGD (Madry et al. 2018): push ``model`` towards class ``targets``.

    From ``delta = 0``, ``steps`` times: ``delta <- clip_eps(delta - step * sign(grad_delta
    CE(model(x + delta), target)))``, then ``x + delta`` is clipped to the pixel range
    ``[0, 1]``. Returns the adversarial pixels; ``||x_adv - x||_inf <= eps`` and
    ``0 <= x_adv <= 1`` always hold. ``model`` maps ``[0, 1]`` pixels to logits and is
    left untouched (evaluated in ``eval()`` mode, gradients only for the images).
    """
    import torch

    if eps < 0 or step <= 0 or steps < 1:
        raise ValueError(f"PGD needs eps >= 0, step > 0 and steps >= 1; got {eps}, {step}, {steps}.")
    x = torch.as_tensor(pixels).detach()
    target = torch.as_tensor(targets, dtype=torch.long, device=x.device)
    was_training = model.training
    model.eval()
    adv = x.clone()
    for _ in range(int(steps)):
        adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(adv), target)
        (gradient,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            delta = (adv - step * gradient.sign() - x).clamp(-eps, eps)
            adv = (x + delta).clamp(0.0, 1.0)
    model.train(was_training)
    return adv.detach()


def shuffle_captions(image_of_pair, fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A permutation of the pairs' captions that gives ``fraction`` of the pairs a caption of another image.

    The chosen pairs pass their captions round in a cycle (in random order);
    returns ``(order, shuffled)``: caption features ``V[order]`` and the boolean
    mask of pairs whose caption now comes from a different image.
    """
    image_of_pair = np.asarray(image_of_pair)
    m = len(image_of_pair)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(m, int(round(fraction * m)), replace=False)
    order = np.arange(m)
    order[chosen] = np.roll(chosen, 1)
    shuffled = image_of_pair[order] != image_of_pair
    return order, shuffled
