"""Image classification sets: digits, CIFAR-10/100, CIFAR-10N, Imagenette, Imagewoof, chest X-ray.

Ids: the original row index for CIFAR and digits (the CIFAR-10 mirror keeps the
official training order, which CIFAR-10N indexes), the original relative file
path for Imagenette, Imagewoof and the chest X-rays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Dataset, stratified_split
from .sources import (COMPLETE, Archive, SourceUnavailableError, download_root, extract_once,
                      fetch_archive, file_sha256, mirror_file, mirror_hint, read_parquet, require_online)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
CIFAR_HOST = "www.cs.toronto.edu"
FASTAI_HOST = "s3.amazonaws.com"
IMAGENETTE_WNIDS = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888605": "parachute",
}
IMAGEWOOF_WNIDS = {
    "n02086240": "Shih-Tzu", "n02087394": "Rhodesian ridgeback", "n02088364": "beagle",
    "n02089973": "English foxhound", "n02093754": "Border terrier", "n02096294": "Australian terrier",
    "n02099601": "golden retriever", "n02105641": "Old English sheepdog", "n02111889": "Samoyed",
    "n02115641": "dingo",
}
CHEST_CLASSES = ["normal", "bacterial pneumonia", "viral pneumonia"]
CHEST_TEST_FRACTION = 624 / 5216  # official test size over official train size: 624 test rows here
CHEST_SPLIT_SEED = 0
CIFAR10N_LABELS = ("aggre", "worse", "random1", "random2", "random3")
FASTAI_ARCHIVES = {
    "imagenette": Archive("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
                          "569b4497c98db6dd29f335d1f109cf315fe127053cedf69010d047f0188e158c", 341_663_724),
    "imagewoof": Archive("https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-320.tgz",
                         "4e4905ed7643120daaf9bf3b2ef7f3a7e8396d9bdaf254a38c6f01f618b4973d", 328_288_506),
}
"""The official fast.ai archives, pinned by SHA-256 and size as TensorFlow Datasets records them
(``url_checksums``); torchvision's ``Imagenette`` pins the same 320 px archive by MD5
3df6f0d01a2c9592104656642f5e78a3."""


def _parquet_images(name: str, split: str, path: Path, image_col: str, classes: list[str],
                    ids: str = "row") -> Dataset:
    table = read_parquet(path, [image_col, "label"])
    images = table.column(image_col).combine_chunks()
    data = images.field("bytes").to_pylist()
    paths = images.field("path").to_pylist()
    labels = table.column("label").to_numpy().astype(np.int64)
    id_values = np.arange(len(labels)) if ids == "row" else np.asarray(paths, dtype=object)
    return Dataset(name, split, "image", id_values, labels, list(classes), f"mirror:{path}",
                   images=data)


def load_digits(split: str, root: Path | None) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (embedded in the package, all in split ``train``)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return Dataset("digits", split, "image", np.arange(len(images)), bunch.target.astype(np.int64),
                   [str(c) for c in bunch.target_names], "sklearn:load_digits", images=images)


def _torchvision_cifar(name: str, split: str) -> Dataset:
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    root = download_root() / name
    try:
        data = cls(str(root), train=split == "train", download=False)
    except RuntimeError:
        how = mirror_hint(name) if name == "cifar10" else (
            f"Download https://{CIFAR_HOST}/~kriz/cifar-100-python.tar.gz and extract it into {root} "
            f"(torchvision's layout: {root}/cifar-100-python/train; set LSI_DOWNLOADS to use another folder), "
            f"or run once on a machine with internet access, which downloads it there.")
        require_online(f"{name} ({split})", CIFAR_HOST, how)
        data = cls(str(root), train=split == "train", download=True)
    return Dataset(name, split, "image", np.arange(len(data.targets)),
                   np.asarray(data.targets, dtype=np.int64), list(data.classes),
                   f"torchvision:{root}", images=data.data)


def load_cifar10(split: str, root: Path | None) -> Dataset:
    path = mirror_file(root, "cifar10", f"{split}.parquet")
    if path is not None:
        return _parquet_images("cifar10", split, path, "img", CIFAR10_CLASSES)
    return _torchvision_cifar("cifar10", split)


def load_cifar100(split: str, root: Path | None) -> Dataset:
    return _torchvision_cifar("cifar100", split)


def read_cifar10n(root: Path | None) -> dict[str, np.ndarray]:
    """The official CIFAR-10N label file as a dict of int64 arrays, loaded without unrestricted unpickling.

    ``torch.load(weights_only=True)`` only rebuilds allowlisted globals; the
    file needs numpy's array reconstructor (pickled under its numpy-1 name),
    ``ndarray`` and ``dtype``, and nothing else is allowed.
    """
    import torch
    from numpy._core.multiarray import _reconstruct

    path = mirror_file(root, "cifar10n", "CIFAR-10_human.pt")
    if path is None:
        path = download_root() / "cifar10n" / "CIFAR-10_human.pt"
    if not path.is_file():
        raise SourceUnavailableError(
            "CIFAR-10N labels are not available: no 'cifar10n/CIFAR-10_human.pt' in the mirror "
            f"or in {path.parent}. Download CIFAR-10_human.pt from the official repository "
            "(github.com/UCSC-REAL/cifar-10-100n, folder data/) into that folder, or set LSI_DATA.")
    allowed = [(_reconstruct, "numpy.core.multiarray._reconstruct"), _reconstruct, np.ndarray, np.dtype,
               type(np.dtype(np.int64)), type(np.dtype(np.int32)), type(np.dtype(np.uint8))]
    try:
        with torch.serialization.safe_globals(allowed):
            raw = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - any failure means the file is not the official one
        raise ValueError(f"{path} is not a readable CIFAR-10N label file ({error}).") from error
    expected = {"clean_label", "aggre_label", "worse_label",
                "random_label1", "random_label2", "random_label3"}
    if not isinstance(raw, dict) or not expected <= set(raw):
        raise ValueError(f"{path} should hold a dict with keys {sorted(expected)}; "
                         f"got {sorted(raw) if isinstance(raw, dict) else type(raw).__name__}.")
    labels = {key: np.asarray(raw[key], dtype=np.int64).ravel() for key in sorted(expected)}
    sizes = {len(v) for v in labels.values()}
    if len(sizes) != 1:
        raise ValueError(f"{path}: the CIFAR-10N label arrays differ in length ({sorted(sizes)}).")
    return labels


def cifar10n_key(label_set: str) -> str:
    """File key of a CIFAR-10N label set: ``aggre`` -> ``aggre_label``, ``random1`` -> ``random_label1``."""
    if label_set not in CIFAR10N_LABELS:
        raise ValueError(f"CIFAR-10N label set {label_set!r} is not valid; choose one of "
                         f"{', '.join(CIFAR10N_LABELS)}.")
    return f"random_label{label_set[-1]}" if label_set.startswith("random") else f"{label_set}_label"


def load_cifar10n(split: str, root: Path | None, label_set: str = "aggre") -> Dataset:
    """CIFAR-10 training images with CIFAR-10N human labels; clean labels in ``extra["clean_labels"]``."""
    ds = load_cifar10("train", root)
    noisy = read_cifar10n(root)
    clean = noisy["clean_label"]
    if not np.array_equal(clean, ds.labels):
        raise ValueError("CIFAR-10N clean labels disagree with the CIFAR-10 training labels: "
                         "the images are not in the official training order.")
    ds.name = "cifar10n" if label_set == "aggre" else f"cifar10n-{label_set}"
    ds.labels = noisy[cifar10n_key(label_set)].copy()
    ds.extra = {"clean_labels": clean}
    ds.inputs_of = "cifar10"
    ds.source += f" + labels:{label_set}"
    return ds


def _folder_dataset(name: str, split: str, folder: Path, wnids: dict[str, str], source: str) -> Dataset:
    order = sorted(wnids)
    files = sorted(p for p in (folder / split).glob("*/*") if p.suffix.lower() in {".jpeg", ".jpg", ".png"})
    if not files:
        raise FileNotFoundError(f"No images under {folder / split}; the extracted archive looks incomplete.")
    labels = np.asarray([order.index(p.parent.name) for p in files], dtype=np.int64)
    ids = np.asarray([str(p.relative_to(folder)) for p in files], dtype=object)
    return Dataset(name, split, "image", ids, labels, [wnids[w] for w in order], source,
                   images=[str(p) for p in files])


def _extracted_by_hand(folder: Path, wnids: dict[str, str]) -> bool:
    """True if ``folder`` holds the archive's layout, ``{train,val}/<wnid>/`` for every class, unpacked by the user."""
    return all((folder / split / wnid).is_dir() for split in ("train", "val") for wnid in wnids)


def _fastai_imagenet_subset(name: str, wnids: dict[str, str], split: str) -> Dataset:
    """An official fast.ai archive: downloaded and checked against its pinned SHA-256, extracted safely once."""
    archive = FASTAI_ARCHIVES[name]
    root = download_root() / name
    folder = root / archive.folder
    if not ((folder / COMPLETE).is_file() or _extracted_by_hand(folder, wnids)):
        local = root / archive.name
        if not (local.is_file() and file_sha256(local) == archive.sha256):
            require_online(f"{name} ({split})", FASTAI_HOST,
                           f"Download {archive.url} (SHA-256 {archive.sha256}) into {root} (or extract it there), or run once on a "
                           f"machine with internet access, which downloads, checks and extracts it there (set "
                           f"LSI_DOWNLOADS to use another folder).")
        extract_once(fetch_archive(archive, root), archive, root)
    return _folder_dataset(name, split, folder, wnids, f"official:{archive.name}")


def load_imagenette(split: str, root: Path | None) -> Dataset:
    """Imagenette (320 px), the archive torchvision's ``Imagenette`` downloads; splits train/val."""
    return _fastai_imagenet_subset("imagenette", IMAGENETTE_WNIDS, split)


def load_imagewoof(split: str, root: Path | None) -> Dataset:
    """Imagewoof (320 px), from the official fast.ai archive; splits train/val."""
    return _fastai_imagenet_subset("imagewoof", IMAGEWOOF_WNIDS, split)


def chest_label(relative_path: str) -> int:
    """Kermany class from a relative path: ``NORMAL/…`` -> 0, ``*_bacteria_*`` -> 1, ``*_virus_*`` -> 2."""
    lower = relative_path.lower()
    if "bacteria" in lower:
        return 1
    if "virus" in lower:
        return 2
    if "normal" in lower:
        return 0
    raise ValueError(f"Cannot tell the chest X-ray class from the path {relative_path!r}.")


def load_chest_xray(split: str, root: Path | None) -> Dataset:
    """Kermany pediatric chest X-rays, 3 classes from the file names.

    The mirror holds only the official train split (5,216 images). Its
    ``train``/``test`` here are a fixed stratified split (seed 0) whose test
    set has 624 images, the size of the official test split (4,592 remain for
    training). An extracted
    official archive (``chest_xray/{train,test}/{NORMAL,PNEUMONIA}``) under
    ``$LSI_DOWNLOADS/chest_xray`` is used with its own split instead.
    """
    path = mirror_file(root, "chest_xray", "train.parquet")
    if path is not None:
        full = _parquet_images("chest_xray", split, path, "image", CHEST_CLASSES, ids="path")
        test_size = int(round(len(full) * CHEST_TEST_FRACTION))
        train, test = stratified_split(full.labels, test_size, seed=CHEST_SPLIT_SEED)
        ds = full.take(train if split == "train" else test)
        ds.source += f" (fixed stratified {split} split, seed {CHEST_SPLIT_SEED})"
        return ds
    folder = download_root() / "chest_xray" / "chest_xray"
    files = sorted(p for p in (folder / split).glob("*/*") if p.suffix.lower() in {".jpeg", ".jpg", ".png"})
    if not files:
        raise SourceUnavailableError(
            f"chest_xray ({split}) is not available and has no automatic download. "
            f"{mirror_hint('chest_xray')} Or download ChestXRay2017.zip from "
            f"https://data.mendeley.com/datasets/rscbjbr9sj/2 and extract it to {folder.parent}.")
    ids = np.asarray([str(p.relative_to(folder)) for p in files], dtype=object)
    labels = np.asarray([chest_label(i) for i in ids], dtype=np.int64)
    return Dataset("chest_xray", split, "image", ids, labels, list(CHEST_CLASSES),
                   f"official:{folder}", images=[str(p) for p in files])
