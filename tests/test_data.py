"""Loaders against tiny fixture mirrors (always) and the real mirrors (when LSI_DATA is set)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from fixtures_data import build_mirror, build_official_layouts, cifar_labels
from lsi.data import DATASETS, SourceUnavailableError, load_dataset, stratified_positions
from lsi.data import sources



@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return build_mirror(tmp_path_factory.mktemp("mirror"))


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Nothing cached, nothing reachable: any attempt to download fails the test."""
    monkeypatch.setenv("LSI_DOWNLOADS", str(tmp_path / "downloads"))
    monkeypatch.setattr(sources, "reachable", lambda *a, **k: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def forbidden(*args, **kwargs):
        raise AssertionError("a download was attempted")

    import torchvision.datasets.utils as tv_utils
    monkeypatch.setattr(tv_utils, "download_url", forbidden)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", forbidden)


def test_stratified_positions_keep_class_proportions_and_are_seeded():
    labels = np.repeat([0, 1, 2], [500, 300, 200])  # grouped by class, like several sources
    subset = stratified_positions(labels, 100, seed=3)
    assert len(subset) == 100 and np.all(np.diff(subset) > 0)
    assert np.bincount(labels[subset]).tolist() == [50, 30, 20]
    assert np.array_equal(subset, stratified_positions(labels, 100, seed=3))
    assert not np.array_equal(subset, stratified_positions(labels, 100, seed=4))
    assert not np.array_equal(subset, np.arange(100))


def test_stratified_positions_rounding_and_edges():
    labels = np.repeat([0, 1, 2], [5, 3, 2])
    assert np.bincount(labels[stratified_positions(labels, 4)], minlength=3).sum() == 4
    assert np.array_equal(stratified_positions(labels, 50), np.arange(10))
    with pytest.raises(ValueError, match="limit"):
        stratified_positions(labels, 0)


def test_cifar10_mirror(mirror):
    ds = load_dataset("cifar10", "train", root=mirror)
    assert len(ds) == 60 and ds.kind == "image" and ds.classes[0] == "airplane"
    assert np.array_equal(ds.ids, np.arange(60)) and ds.labels.dtype == np.int64
    assert np.array_equal(ds.labels, cifar_labels(60))
    assert ds.source == f"mirror:{mirror / 'cifar10' / 'train.parquet'}"
    assert ds.image(0).size == (32, 32) and ds.image(0).mode == "RGB"
    sub = load_dataset("cifar10", "train", limit=20, seed=1, root=mirror)
    assert np.bincount(sub.labels).tolist() == [2] * 10
    assert np.array_equal(sub.labels, ds.labels[sub.ids]), "ids must be the original row indices"
    assert np.asarray(ds.image(int(sub.ids[0]))).tobytes() == np.asarray(sub.image(0)).tobytes()


def test_limit_from_env_root(mirror, monkeypatch):
    monkeypatch.setenv("LSI_DATA", str(mirror))
    assert len(load_dataset("cifar10", "test", limit=10)) == 10


def test_cifar10n_labels_are_aligned_and_subsets_shared(mirror):
    clean = load_dataset("cifar10", "train", root=mirror)
    human = load_dataset("cifar10n-worse", "train", root=mirror)
    assert np.array_equal(human.extra["clean_labels"], clean.labels)
    assert 0 < np.mean(human.labels != clean.labels) < 1
    a = load_dataset("cifar10n", limit=30, root=mirror)
    b = load_dataset("cifar10n-random2", limit=30, root=mirror)
    assert np.array_equal(a.ids, b.ids), "label sets of the same images must give the same subset"


def test_chest_xray_fixed_stratified_split(mirror):
    train = load_dataset("chest_xray", "train", root=mirror)
    test = load_dataset("chest_xray", "test", root=mirror)
    assert set(train.ids).isdisjoint(test.ids) and len(train) + len(test) == 60
    assert len(test) == round(60 * 624 / 5216)
    assert sorted(np.unique(test.labels)) == [0, 1, 2]
    assert train.classes == ["normal", "bacterial pneumonia", "viral pneumonia"]
    for ident, label in zip(train.ids, train.labels):
        assert ("bacteria" in ident) == (label == 1) and ("virus" in ident) == (label == 2)
    assert np.array_equal(test.ids, load_dataset("chest_xray", "test", root=mirror).ids)


def test_text_mirrors(mirror):
    imdb = load_dataset("imdb", "test", root=mirror)
    assert imdb.kind == "text" and imdb.ids[0] == "test/neg/0_2.txt" and imdb.text(0).startswith("review 0")
    with pytest.raises(TypeError, match="no images"):
        imdb.image(0)
    sst2 = load_dataset("sst2", "validation", root=mirror)
    assert len(sst2) == 4 and sst2.text(3) == "sentence 3 of validation"


def test_coco_banana_elephant_filter(mirror):
    full = load_dataset("coco_all", "val", root=mirror)
    assert full.labels.tolist() == [1, 2, 0, 2, 0] and full.kind == "image-text"
    coco = load_dataset("coco", "val", root=mirror)
    assert coco.ids.tolist() == [100, 101, 103] and coco.labels.tolist() == [0, 1, 1]
    assert coco.classes == ["banana", "elephant"]
    assert coco.text(1) == "caption 0 of image 1" and len(coco.extra["captions"][1]) == 5
    assert coco.image(0).size == (48, 48)


def test_coco_captions_become_pairs_with_their_images_features(mirror):
    from lsi.data.coco import assemble_pairs, caption_dataset

    splits = [load_dataset("coco_all", split, root=mirror) for split in ("train", "val")]
    texts = [caption_dataset(ds) for ds in splits]
    counts = [len(cs) for ds in splits for cs in ds.extra["captions"]]
    assert [len(t) for t in texts] == [sum(len(cs) for cs in ds.extra["captions"]) for ds in splits]
    assert texts[1].name == "coco_all_captions" and texts[1].kind == "text"
    assert texts[1].ids[0] == f"{splits[1].ids[0]}/0" and texts[1].text(0) == splits[1].extra["captions"][0][0]
    images = np.arange(len(counts))[:, None] * np.ones((1, 2))          # image row r has features (r, r)
    captions = np.arange(sum(counts))[:, None] * np.ones((1, 3))
    pairs = assemble_pairs(splits, images, captions, ("i", "t"))
    assert len(pairs.captions) == sum(counts) and pairs.encoders == ("i", "t")
    assert (pairs.image_features[:, 0] == pairs.image_of_pair).all() and (pairs.text_features == captions).all()
    image_ids = np.concatenate([ds.ids for ds in splits])
    assert (pairs.image_ids == image_ids[pairs.image_of_pair]).all() and len(pairs.images) == len(counts)


def test_digits_embedded():
    ds = load_dataset("digits", limit=100)
    assert len(ds) == 100 and ds.image(0).size == (8, 8) and np.bincount(ds.labels).min() >= 9


def test_unknown_name_or_split():
    with pytest.raises(ValueError, match="choose one of"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_dataset("cifar10", "validation")


def test_split_aliases(mirror):
    assert load_dataset("coco", "test", root=mirror).split == "val"
    assert load_dataset("sst2", "val", root=mirror).split == "validation"
    assert set(DATASETS) >= {"digits", "cifar10", "cifar100", "cifar10n", "imagenette", "imagewoof",
                             "chest_xray", "imdb", "sst2", "coco"}


def test_corrupt_mirror_file_gives_clear_error(mirror, tmp_path):
    bad = tmp_path / "bad"
    (bad / "cifar10").mkdir(parents=True)
    (bad / "cifar10" / "train.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        load_dataset("cifar10", root=bad)
    (bad / "sst2").mkdir()
    (bad / "sst2" / "train.parquet").write_bytes((mirror / "imdb" / "train.parquet").read_bytes())
    with pytest.raises(ValueError, match="lacks the column"):
        load_dataset("sst2", root=bad)


def test_corrupt_cifar10n_file(mirror, tmp_path):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "train.parquet").write_bytes((mirror / "cifar10" / "train.parquet").read_bytes())
    (tmp_path / "cifar10n").mkdir()
    (tmp_path / "cifar10n" / "CIFAR-10_human.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable CIFAR-10N label file"):
        load_dataset("cifar10n", root=tmp_path)


def test_cifar10n_refuses_unsafe_pickles(tmp_path):
    """The label file is loaded with an allowlist: a pickle that would run code is refused, not run."""
    import torch

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "cifar10n").mkdir()
    torch.save({"clean_label": Exploit()}, tmp_path / "cifar10n" / "CIFAR-10_human.pt")
    from lsi.data.images import read_cifar10n
    with pytest.raises(ValueError, match="not a readable CIFAR-10N label file"):
        read_cifar10n(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenette", "imagewoof", "chest_xray", "imdb",
                                  "sst2", "coco", "cifar10n"])
def test_missing_source_fails_fast_with_instructions(name, tmp_path, no_network):
    start = time.perf_counter()
    with pytest.raises(SourceUnavailableError) as info:
        load_dataset(name, DATASETS[name].splits[0], root=tmp_path / "empty")
    assert time.perf_counter() - start < 30  # generous: no network is touched at all
    assert "LSI_DATA" in str(info.value) or "Download" in str(info.value)


def test_official_layouts_already_downloaded(tmp_path, no_network):
    downloads = build_official_layouts(Path(os.environ["LSI_DOWNLOADS"]))
    nette = load_dataset("imagenette", "val", root=tmp_path / "empty")
    assert nette.labels.tolist() == [0, 0, 9, 9] and nette.classes[9] == "parachute"
    assert nette.ids[0] == "val/n01440764/n01440764_0.JPEG" and nette.source.startswith("official:")
    woof = load_dataset("imagewoof", "test", root=tmp_path / "empty")
    assert woof.split == "val" and woof.classes[woof.labels[-1]] == "dingo" and woof.image(0).size == (40, 40)
    chest = load_dataset("chest_xray", "test", root=tmp_path / "empty")
    assert chest.labels.tolist() == [0, 1, 2] and chest.ids[1] == "test/PNEUMONIA/person1_bacteria_1.jpeg"
    coco = load_dataset("coco", "val", root=tmp_path / "empty")
    assert coco.ids.tolist() == [5, 7] and coco.labels.tolist() == [1, 0]
    assert coco.extra["categories"][0] == ["elephant", "person"] and coco.text(1) == "caption 0 of 7"
    assert downloads.is_dir()


def test_reachable_is_bounded():
    start = time.perf_counter()
    sources.reachable("192.0.2.1", timeout=0.5)  # TEST-NET-1: never answers; must give up on time
    assert time.perf_counter() - start < 5


@pytest.mark.realdata
def test_real_cifar10_and_cifar10n(mirrors):
    train = load_dataset("cifar10", "train")
    assert len(train) == 50_000 and train.source.startswith("mirror:")
    assert np.bincount(train.labels).tolist() == [5000] * 10
    assert train.image(0).size == (32, 32)
    human = load_dataset("cifar10n", "train", limit=2000)
    assert np.array_equal(human.extra["clean_labels"], train.labels[human.ids])
    assert 0.05 < np.mean(human.labels != human.extra["clean_labels"]) < 0.15  # aggre: 9.0% noise
    test = load_dataset("cifar10", "test", limit=100, seed=0)
    assert np.bincount(test.labels).tolist() == [10] * 10


@pytest.mark.realdata
def test_real_other_mirrors(mirrors):
    train, test = load_dataset("chest_xray", "train"), load_dataset("chest_xray", "test")
    assert (len(train), len(test)) == (4592, 624) and set(train.ids).isdisjoint(test.ids)
    from lsi.data.images import chest_label
    assert all(chest_label(i) == y for i, y in zip(train.ids, train.labels))
    full = np.bincount(np.concatenate([train.labels, test.labels]))
    assert np.all(np.abs(np.bincount(test.labels) - full * 624 / 5216) < 1)
    imdb = load_dataset("imdb", "train")
    assert len(imdb) == 24_996 and np.bincount(imdb.labels).tolist() == [12_498, 12_498]
    assert [len(load_dataset("sst2", s)) for s in ("train", "validation", "test")] == [6920, 872, 1821]
    coco = [load_dataset("coco", s) for s in ("train", "val")]
    assert sum(len(c) for c in coco) == 7
