"""Downloads and extraction (issue 23, item 5): pinned checksums, a truncated archive re-downloaded, a
tar-slip member refused, completion marked explicitly, Hugging Face revisions pinned. Offline: the
archives are small tars made here and served from file:// URLs."""
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from lsi.data import images, load_dataset, sources, texts
from lsi.data.sources import COMPLETE, Archive, extract_once, fetch_archive
from lsi.features import extractors

WNIDS = sorted(images.IMAGENETTE_WNIDS)[:2]


def _tar(path: Path, members: dict[str, bytes], top: str = "imagenette2-320") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name if name.startswith(("/", "..")) else f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _archive(path: Path) -> Archive:
    data = path.read_bytes()
    return Archive(path.as_uri(), hashlib.sha256(data).hexdigest(), len(data))


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A 4-image Imagenette archive at a file:// URL, pinned in place of the official one; the hub offline."""
    members = {f"{split}/{wnid}/{i}.JPEG": f"{split}{wnid}{i}".encode() for split in ("train", "val")
               for wnid in WNIDS for i in range(2)}
    (tmp_path / "source").mkdir()
    source = _tar(tmp_path / "source" / "imagenette2-320.tgz", members)
    archive = _archive(source)
    monkeypatch.setitem(images.FASTAI_ARCHIVES, "imagenette", archive)
    monkeypatch.setattr(images, "require_online", lambda *a, **k: None)
    monkeypatch.setenv("LSI_DOWNLOADS", str(tmp_path / "downloads"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return source, archive, tmp_path / "downloads" / "imagenette"


def test_a_download_is_checked_extracted_and_marked_complete(served):
    source, archive, root = served
    ds = load_dataset("imagenette", "train")
    assert len(ds) == 4 and sorted(set(ds.ids)) == sorted(f"train/{w}/{i}.JPEG" for w in WNIDS for i in range(2))
    assert (root / "imagenette2-320" / COMPLETE).read_text().startswith(archive.sha256)
    assert ds.source == "official:imagenette2-320.tgz"
    assert not list(root.glob(".*extracting")) and not list(root.glob("*.part"))


def test_a_truncated_archive_is_downloaded_again(served):
    source, archive, root = served
    root.mkdir(parents=True)
    (root / archive.name).write_bytes(source.read_bytes()[:100])  # an interrupted earlier download
    assert len(load_dataset("imagenette", "val")) == 4
    assert sources.file_sha256(root / archive.name) == archive.sha256


def test_a_download_that_does_not_match_its_checksum_is_refused(served, monkeypatch):
    source, archive, root = served
    monkeypatch.setitem(images.FASTAI_ARCHIVES, "imagenette", Archive(archive.url, "0" * 64, archive.size))
    with pytest.raises(OSError, match="does not match its pinned SHA-256"):
        load_dataset("imagenette", "train")
    assert not (root / archive.name).exists() and not list(root.glob("*.part"))
    assert not (root / "imagenette2-320").exists()


def test_a_half_extracted_folder_is_extracted_again(served):
    source, archive, root = served
    partial = root / "imagenette2-320" / "train" / WNIDS[0]
    partial.mkdir(parents=True)
    (partial / "0.JPEG").write_bytes(b"one image of eight, and no completion marker")
    assert len(load_dataset("imagenette", "train")) == 4


def test_a_complete_extraction_is_used_without_the_network(served, monkeypatch):
    source, archive, root = served
    load_dataset("imagenette", "train")
    source.unlink()  # the URL is gone: only the marked extraction remains
    (root / archive.name).unlink()

    def offline(*args, **kwargs):
        raise AssertionError("no download once the extraction is marked complete")

    monkeypatch.setattr(sources.urllib.request, "urlopen", offline)
    assert len(load_dataset("imagenette", "val")) == 4


def test_a_folder_extracted_by_hand_in_the_official_layout_is_used_offline(tmp_path, monkeypatch):
    folder = tmp_path / "imagenette" / "imagenette2-320"
    for split in ("train", "val"):
        for wnid in images.IMAGENETTE_WNIDS:
            (folder / split / wnid).mkdir(parents=True)
            (folder / split / wnid / "0.JPEG").write_bytes(b"x")
    monkeypatch.setenv("LSI_DOWNLOADS", str(tmp_path))
    monkeypatch.setenv("LSI_OFFLINE", "1")
    assert len(load_dataset("imagenette", "val")) == len(images.IMAGENETTE_WNIDS)
    (folder / "val" / sorted(images.IMAGENETTE_WNIDS)[0] / "0.JPEG").unlink()
    (folder / "val" / sorted(images.IMAGENETTE_WNIDS)[0]).rmdir()  # a class missing: not the official layout
    with pytest.raises(sources.SourceUnavailableError, match="or extract it there"):
        load_dataset("imagenette", "val")


def test_a_member_outside_the_folder_is_refused(tmp_path):
    archive_path = _tar(tmp_path / "evil.tgz", {"train/a/1.JPEG": b"x", "../escaped.txt": b"escaped"}, top="evil")
    with pytest.raises(tarfile.OutsideDestinationError):
        extract_once(archive_path, _archive(archive_path), tmp_path / "out")
    assert not (tmp_path / "out" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []  # no staging folder, no half extraction left


def test_an_absolute_member_stays_inside_the_folder(tmp_path):
    outside = tmp_path / "outside.txt"
    archive_path = _tar(tmp_path / "abs.tgz", {"train/a/1.JPEG": b"x", str(outside): b"escaped"}, top="abs")
    target = extract_once(archive_path, _archive(archive_path), tmp_path / "out")
    assert not outside.exists() and (target / COMPLETE).is_file()


def test_fetch_reuses_a_matching_archive(tmp_path, monkeypatch):
    archive_path = _tar(tmp_path / "imagenette2-320.tgz", {"train/a/1.JPEG": b"x"})
    archive = _archive(archive_path)
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert fetch_archive(archive, tmp_path) == archive_path


def test_the_official_archives_are_pinned():
    for name, archive in images.FASTAI_ARCHIVES.items():
        assert len(archive.sha256) == 64 and int(archive.sha256, 16) and archive.size > 3 * 10 ** 8
        assert archive.url == f"https://s3.amazonaws.com/fast-ai-imageclas/{name}2-320.tgz"


def test_the_hub_revisions_are_pinned(monkeypatch, tmp_path):
    calls = []

    def snapshot_download(repo_id, revision=None, local_files_only=False):
        calls.append((repo_id, revision, local_files_only))
        return str(tmp_path)

    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    extractors._hub_snapshot(extractors.BERT_REPO, extractors.BERT_REVISION, "bert", "offline")
    assert calls == [("bert-base-uncased", "86b5e0934494bd15c9632b12f734a8a67f723594", True)]
    assert extractors.get_extractor("bert").identity()["weights"].endswith("@" + extractors.BERT_REVISION)
    assert extractors.get_extractor("clip").identity()["weights"].endswith("@" + extractors.CLIP_REVISION)

    downloads = []

    def hf_hub_download(repo_id, filename, repo_type=None, revision=None, local_files_only=False):
        downloads.append((repo_id, revision))
        raise FileNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(sources.SourceUnavailableError):
        texts.load_imdb("train", None)
    assert downloads == [("stanfordnlp/imdb", "e6281661ce1c48d982bc483cf8a173c1bbeb5d31")]


def test_weights_from_another_commit_are_refused():
    pinned = os.path.join("hub", "models--x", "snapshots", "abc", "w.bin")
    assert extractors.check_revision(pinned, "x", "abc") == pinned
    with pytest.raises(ValueError, match="not from the pinned commit abc"):
        extractors.check_revision(os.path.join("hub", "models--x", "snapshots", "def", "w.bin"), "x", "abc")
