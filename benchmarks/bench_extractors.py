"""Throughput of the offline feature extractors on this machine: images/s and texts/s.

Measures end-to-end encoding as ``extract_features`` does it (decode, preprocess,
batched forward under ``torch.inference_mode``), after one warm-up batch, on
the real mirrors when ``LSI_DATA`` is set and on synthetic inputs otherwise.
Model loading is timed separately. Short on purpose: the numbers size the
book's runs (``n / rate`` seconds per data set), they are not a tuning study.

For CIFAR-10 under each preprocessing (raw 32x32 pixels as the authors feed
them, resized to 128 and to 224 px) it also records what the features are
worth: the fraction of feature values that are exactly zero, and the test
accuracy of a logistic regression (scikit-learn, standardised features) fitted
on ``--n-train`` stratified training images and scored on ``--n-test`` test
images. Everything goes to a JSON file with the commit and machine it ran on.

    python benchmarks/bench_extractors.py [--n-images 128] [--n-texts 256] [--n-train 800] [--n-test 400]
        [--threads 2] [--device cpu] [--out benchmarks/results/extractors.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from lsi.data import Dataset, load_dataset
from lsi.features import _encode_chunk
from lsi.features.extractors import get_extractor
from lsi.features.preprocessing import Preprocessing
from lsi.provenance import run_record
from lsi.results import atomic_write_bytes


class _Null:
    def update(self, n):
        pass


def synthetic(kind: str, n: int) -> Dataset:
    rng = np.random.default_rng(0)
    if kind == "image":
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        return Dataset("synthetic", "train", "image", np.arange(n), np.zeros(n, np.int64), ["x"], "synthetic",
                       images=images)
    words = "the film was a long and moving story of love loss and hope told with care".split()
    texts = [" ".join(rng.choice(words, size=rng.integers(8, 200))) for _ in range(n)]
    return Dataset("synthetic", "train", "text", np.arange(n), np.zeros(n, np.int64), ["x"], "synthetic",
                   texts=texts)


def inputs(name: str, kind: str, n: int, real: bool) -> Dataset:
    return load_dataset(name, "train", limit=n) if real else synthetic(kind, n)


def measure(extractor: str, ds: Dataset, preprocessing: str, size: int | None, batch_size: int,
            device: str) -> tuple[float, float, float, np.ndarray]:
    """(load seconds, samples per wall second, samples per second of the process's CPU time / threads, features).

    The third is what the run would reach with the cores to itself: on a shared
    machine the wall rate drops while the CPU time per sample barely moves.
    """
    start = time.perf_counter()
    encoder = get_extractor(extractor).build().to(torch.device(device))
    load_s = time.perf_counter() - start
    transform = encoder.transform(Preprocessing(preprocessing), size) if encoder.modality == "image" else None
    rows = np.arange(len(ds))
    with torch.inference_mode():
        _encode_chunk(encoder, ds, rows[:batch_size], transform, batch_size, _Null())  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        features = _encode_chunk(encoder, ds, rows, transform, batch_size, _Null())
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return load_s, len(ds) / wall, len(ds) / (cpu / torch.get_num_threads()), np.asarray(features)


def probe_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of a logistic regression on standardised features (scikit-learn defaults, more iterations)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    return float(model.fit(train, y_train).score(test, y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=128, help="images per throughput case (chest X-ray)")
    parser.add_argument("--n-texts", type=int, default=256)
    parser.add_argument("--n-train", type=int, default=800, help="CIFAR-10 training images per preprocessing")
    parser.add_argument("--n-test", type=int, default=400, help="CIFAR-10 test images per preprocessing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/extractors.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    real = bool(os.environ.get("LSI_DATA"))
    load_before = os.getloadavg()[0]
    result = {"provenance": run_record(args.device, script="benchmarks/bench_extractors.py",
                                       arguments={k: str(v) for k, v in vars(args).items()},
                                       data="real mirrors" if real else "synthetic",
                                       torch_threads=torch.get_num_threads(), load_average_before=load_before),
              "throughput": [], "cifar10_preprocessing": []}
    print(f"device {args.device}, {torch.get_num_threads()} torch threads, data: "
          f"{'real mirrors' if real else 'synthetic'}, load average before: {load_before:.1f}")
    print(f"{'extractor':<20}{'input':<32}{'n':>5}{'batch':>6}{'load s':>7}{'per s':>7}{'per s, own cores':>18}")

    def record(extractor, what, ds, pre, size, batch):
        load_s, rate, own, features = measure(extractor, ds, pre, size, batch, args.device)
        print(f"{extractor:<20}{what:<32}{len(ds):>5}{batch:>6}{load_s:>7.1f}{rate:>7.1f}{own:>18.1f}", flush=True)
        result["throughput"].append(dict(extractor=extractor, input=what, n=len(ds), batch_size=batch,
                                         load_s=load_s, per_s_wall=rate, per_s_own_cores=own,
                                         minutes_50k_own_cores=50_000 / own / 60))
        return features

    cifar = [("authors", None, 256, "CIFAR-10, raw 32x32"), ("standard", 128, 64, "CIFAR-10, resized 128"),
             ("standard", None, 64, "CIFAR-10, resized 224")]
    for pre, size, batch, what in cifar:
        splits = {}
        for split, n in (("train", args.n_train), ("test", args.n_test)):
            ds = load_dataset("cifar10", split, limit=n, seed=0) if real else synthetic("image", n)
            splits[split] = (record("efficientnet_lite0", f"{what} ({split})", ds, pre, size, batch), ds.labels)
        (train, y_train), (test, y_test) = splits["train"], splits["test"]
        row = dict(input=what, preprocessing=pre, image_size=size or (32 if pre == "authors" else 224),
                   n_train=len(train), n_test=len(test), n_features=int(train.shape[1]),
                   zero_fraction=float(np.mean(np.concatenate([train, test]) == 0)),
                   test_accuracy=probe_accuracy(train, y_train, test, y_test) if real else None)
        result["cifar10_preprocessing"].append(row)
        print(f"  {what}: {row['zero_fraction']:.1%} of features exactly zero, logistic regression test "
              f"accuracy {row['test_accuracy']}", flush=True)
    others = [("efficientnet_lite0", "chest_xray", "image", "standard", None, args.n_images, 64, "chest X-ray, 224"),
              ("minilm", "sst2", "text", "standard", None, args.n_texts, 32, "SST-2 sentence"),
              ("minilm", "imdb", "text", "standard", None, args.n_texts // 2, 32, "IMDb review, <=256 tokens")]
    for extractor, name, kind, pre, size, n, batch, what in others:
        record(extractor, what, inputs(name, kind, n, real), pre, size, batch)
    result["provenance"]["load_average_after"] = os.getloadavg()[0]
    atomic_write_bytes(args.out, json.dumps(result, indent=1).encode())
    print(f"load average after: {os.getloadavg()[0]:.1f} (other jobs on the machine slow every rate); wrote {args.out}")


if __name__ == "__main__":
    main()
