"""Tiny mirrors in the format of ``shared/data`` (same Parquet schemas, same label file), built in tmp dirs."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def jpeg(rng: np.random.Generator, size: int, mode: str = "RGB") -> bytes:
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(buffer, "JPEG")
    return buffer.getvalue()


def _write(path: Path, columns: dict, schema: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: pa.array(v, type=(schema or {}).get(k)) for k, v in columns.items()}
    pq.write_table(pa.table(arrays), path)


def cifar_labels(n: int) -> np.ndarray:
    """Grouped by nothing: a fixed permutation of ``n // 10`` rows per class."""
    return np.random.default_rng(1).permutation(np.repeat(np.arange(10), n // 10))


def build_mirror(root: Path, n_cifar: int = 60) -> Path:
    """Write every mirror folder with a few rows each; returns ``root``."""
    rng = np.random.default_rng(0)
    labels = cifar_labels(n_cifar)
    for split, lab in [("train", labels), ("test", np.sort(cifar_labels(20)))]:
        images = [{"bytes": jpeg(rng, 32), "path": f"{split}/c{y}/{i:04d}.jpg"} for i, y in enumerate(lab)]
        _write(root / "cifar10" / f"{split}.parquet", {"img": images, "label": lab.tolist()},
               {"img": IMAGE, "label": pa.int64()})
    build_cifar10n(root / "cifar10n" / "CIFAR-10_human.pt", labels)
    chest = np.repeat([0, 1, 2], [20, 25, 15])
    names = {0: "NORMAL/IM-{:04d}-0001.jpeg", 1: "PNEUMONIA/person{:d}_bacteria_1.jpeg",
             2: "PNEUMONIA/person{:d}_virus_2.jpeg"}
    images = [{"bytes": jpeg(rng, 64, "L"), "path": "train/" + names[y].format(i)} for i, y in enumerate(chest)]
    _write(root / "chest_xray" / "train.parquet", {"image": images, "label": chest.tolist()},
           {"image": IMAGE, "label": pa.int64()})
    for split in ("train", "test"):
        lab = [0] * 6 + [1] * 6
        files = [f"{split}/{'neg' if y == 0 else 'pos'}/{i}_{7 if y else 2}.txt" for i, y in enumerate(lab)]
        texts = [f"review {i}: {'awful boring film' if y == 0 else 'a wonderful moving film'}"
                 for i, y in enumerate(lab)]
        _write(root / "imdb" / f"{split}.parquet", {"text": texts, "label": lab, "file": files},
               {"text": pa.large_string(), "label": pa.int64(), "file": pa.large_string()})
    for split, n in [("train", 10), ("validation", 4), ("test", 6)]:
        lab = [i % 2 for i in range(n)]
        _write(root / "sst2" / f"{split}.parquet",
               {"sentence": [f"sentence {i} of {split}" for i in range(n)], "label": lab},
               {"sentence": pa.large_string(), "label": pa.int64()})
    categories = [["person", "banana"], ["elephant"], ["dog"], ["banana", "elephant"], ["cat", "couch"]]
    for split in ("train", "val"):
        _write(root / "coco_mini" / f"{split}.parquet", {
            "image": [{"bytes": jpeg(rng, 48), "path": f"{split}2017/{i:012d}.jpg"} for i in range(5)],
            "image_id": [100 + i for i in range(5)],
            "captions": [[f"caption {k} of image {i}" for k in range(5)] for i in range(5)],
            "categories": categories}, {"image": IMAGE})
    return root


def build_cifar10n(path: Path, clean: np.ndarray) -> None:
    """A CIFAR-10N-like label file: a pickled dict of int64 numpy arrays, as the official one."""
    rng = np.random.default_rng(2)
    noisy = lambda rate: np.where(rng.random(len(clean)) < rate, (clean + 1) % 10, clean)  # noqa: E731
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"clean_label": clean.astype(np.int64), "aggre_label": noisy(0.1), "worse_label": noisy(0.4),
                "random_label1": noisy(0.17), "random_label2": noisy(0.18), "random_label3": noisy(0.18)},
               path)


def build_official_layouts(downloads: Path) -> Path:
    """Extracted official archives as their loaders expect them under ``$LSI_DOWNLOADS``."""
    import json

    rng = np.random.default_rng(3)

    def image(path: Path, size: int = 40, mode: str = "RGB") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(rng, size, mode))

    for name, wnids in [("imagenette", ["n01440764", "n03888605"]), ("imagewoof", ["n02086240", "n02115641"])]:
        for split in ("train", "val"):
            for wnid in wnids:
                for k in range(2):
                    image(downloads / name / f"{name}2-320" / split / wnid / f"{wnid}_{k}.JPEG")
        (downloads / name / f"{name}2-320" / ".lsi-complete").write_text("extracted and marked complete\n")
    chest = downloads / "chest_xray" / "chest_xray"
    for split in ("train", "test"):
        for rel in ["NORMAL/IM-0001-0001.jpeg", "PNEUMONIA/person1_bacteria_1.jpeg", "PNEUMONIA/person2_virus_3.jpeg"]:
            image(chest / split / rel, 30, "L")
    coco = downloads / "coco"
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (7, 3, 5)]
    for img in images:
        image(coco / "val2017" / img["file_name"])
    names = {1: "banana", 2: "elephant", 3: "person"}
    (coco / "annotations" / "instances_val2017.json").write_text(json.dumps({
        "images": images, "categories": [{"id": k, "name": v} for k, v in names.items()],
        "annotations": [{"image_id": 7, "category_id": 1}, {"image_id": 3, "category_id": 3},
                        {"image_id": 5, "category_id": 2}, {"image_id": 5, "category_id": 3}]}))
    (coco / "annotations" / "captions_val2017.json").write_text(json.dumps({
        "annotations": [{"image_id": i, "caption": f" caption {k} of {i} "} for i in (7, 3, 5) for k in range(5)]}))
    return downloads
