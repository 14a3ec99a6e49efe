"""Published values and merge: the whole file is checked (issue 23, item 4), and the bad input of
``lsi published`` and ``lsi merge`` is a one-line error with nothing written (item 7)."""
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lsi
from core_data import blobs
from lsi import published
from lsi.cli import main
from lsi.book.chapter_data import publish_scores, published_tables


def _run(*argv):
    return main([str(a) for a in argv])


@pytest.fixture
def result(tmp_path):
    """An ``lsi compute`` output (a real run's rows and metadata) from an absolute features path."""
    X, y = blobs(30, 3, 3)
    features, out = tmp_path / "F.npz", tmp_path / "R.parquet"
    np.savez(features, features=X, labels=y)
    assert _run("compute", "--features", features, "--solver", "newton-step", "--quiet", "--out", out) == 0
    return out


def _edit_record(path, change):
    """Change a published file's provenance, keep its rows (an edited metadata field)."""
    arrow = pq.read_table(path)
    meta = dict(arrow.schema.metadata)
    record = json.loads(meta[published.KEY])
    change(record)
    meta[published.KEY] = json.dumps(record).encode()
    pq.write_table(arrow.replace_schema_metadata(meta), path)


@pytest.mark.parametrize("field, value", [("commit", "0000000"), ("setting", "a better setting"),
                                          ("name", "other"), ("n_samples", 31)])
def test_an_edited_provenance_field_fails_load_and_check(result, tmp_path, capsys, field, value):
    folder = tmp_path / "published"
    path = published.add(result, name="blobs", folder=folder)
    published.load("blobs", folder)
    _edit_record(path, lambda record: record.__setitem__(field, value))
    with pytest.raises(ValueError, match="provenance was edited"):
        published.load("blobs", folder)
    assert _run("published", "check", "--folder", folder) == 2
    assert "provenance was edited" in capsys.readouterr().err


def test_a_renamed_file_fails_load(result, tmp_path):
    folder = tmp_path / "published"
    path = published.add(result, name="blobs", folder=folder)
    path.rename(folder / "blobs-renamed.parquet")
    with pytest.raises(ValueError, match="was published as 'blobs.parquet'.*renamed"):
        published.load("blobs-renamed", folder)


def test_the_record_names_its_file_and_hashes_rows_and_provenance(result, tmp_path):
    folder = tmp_path / "published"
    published.add(result, name="blobs", folder=folder)
    record = published.provenance("blobs", folder)
    assert record["file"] == "blobs.parquet" and record["format"] == published.FORMAT
    assert record["rows_sha256"] == published.content_hash(lsi.load_table(result))
    assert record["sha256"] == published.record_hash(record) != record["rows_sha256"]


@pytest.mark.parametrize("name", ["../book/data/x", "/etc/passwd", "blobs/../blobs", "", "BLOBS"])
def test_names_outside_the_index_are_refused(result, tmp_path, name):
    folder = tmp_path / "published"
    published.add(result, name="blobs", folder=folder)
    shutil.copy(folder / "blobs.parquet", tmp_path / "outside.parquet")
    with pytest.raises(FileNotFoundError, match="No published value"):
        published.load(name, folder)
    with pytest.raises(FileNotFoundError, match="No published value"):
        published.load("../outside", folder)  # a valid file, but outside the folder


def test_from_chapter_validates_the_chapter_name(tmp_path, monkeypatch):
    X, y = blobs(20, 3, 2)
    monkeypatch.setenv("LSI_BOOK_DATA", str(tmp_path / "data" / "book"))
    publish_scores(lsi.compute_lsi(X, y, solver="newton-step", progress=False), chapter="demo", name="scores",
                   dataset="digits")
    (tmp_path / "data" / "elsewhere").mkdir()
    shutil.copy(tmp_path / "data" / "book" / "demo" / "scores.parquet", tmp_path / "data" / "elsewhere")
    for chapter in ("../elsewhere", "dem", "/tmp"):
        with pytest.raises(ValueError, match="executed chapters there: demo"):
            published.from_chapter(chapter, data=tmp_path / "data" / "book", folder=tmp_path / "published")
    assert not (tmp_path / "published").exists()
    assert [p.stem for p in published.from_chapter("demo", data=tmp_path / "data" / "book",
                                                   folder=tmp_path / "published")] == ["digits-20-newton-step"]


def test_no_machine_paths_in_the_published_provenance(result, tmp_path):
    table = lsi.load_table(result)  # as an `lsi compute --dataset` run records them
    table.attrs["lsi"]["data"] = {"dataset": "cifar10", "source": f"mirror:{tmp_path}/mirror/cifar10/train.parquet",
                                  "cache_key": "18a2bb680b37663c7403",
                                  "cache_path": f"{tmp_path}/cache/cifar10-18a2bb680b37663c7403.npz",
                                  "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"}
    lsi.save_table(table, result)
    folder = tmp_path / "published"
    published.add(result, name="c", folder=folder)
    record = published.provenance("c", folder)
    assert str(tmp_path) not in json.dumps(record) and "/root" not in json.dumps(record)
    assert record["source"]["file"] == "R.parquet" and "cache_path" not in record["data"]
    assert record["data"]["cache_key"] == "18a2bb680b37663c7403"
    assert record["data"]["source"] == "mirror:train.parquet"
    assert record["data"]["url"] == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def test_the_mirror_path_is_recorded_relative_to_the_mirror(result, tmp_path, monkeypatch):
    monkeypatch.setenv("LSI_DATA", str(tmp_path / "mirror"))
    (tmp_path / "mirror").mkdir()
    assert published.portable({"source": f"mirror:{tmp_path}/mirror/cifar10/train.parquet"}) == \
        {"source": "mirror:cifar10/train.parquet"}
    assert published.portable([f"{published.PROJECT.resolve()}/book/data/x.parquet"]) == ["book/data/x.parquet"]


def test_migrate_rehashes_an_old_file_without_touching_its_rows_and_refuses_an_edited_one(result, tmp_path):
    folder = tmp_path / "published"
    path = published.add(result, name="old", folder=folder)

    def old_format(record):  # as published before the hash covered the provenance
        for key in ("rows_sha256", "file", "format"):
            record.pop(key)
        record["sha256"] = published.content_hash(pq.read_table(path).to_pandas())
        record["data"] = {"cache_path": "/root/.cache/x.npz", "source": "/home/someone/F.npz"}

    _edit_record(path, old_format)
    before = pq.read_table(path)
    with pytest.raises(ValueError, match="migrate old"):
        published.load("old", folder)
    published.migrate("old", folder)
    after = pq.read_table(path)
    assert after.equals(before) and after.schema.remove_metadata().equals(before.schema.remove_metadata())
    record = published.load("old", folder).attrs["published"]
    assert record["data"] == {"source": "F.npz"}
    published.migrate("old", folder)  # already migrated: verified, unchanged
    assert pq.read_table(path).schema.metadata == after.schema.metadata

    _edit_record(path, old_format)
    arrow = pq.read_table(path)
    frame = arrow.to_pandas()
    frame.loc[0, "lsi"] += 1
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(arrow.schema.metadata),
                   path)
    with pytest.raises(ValueError, match="before migrating"):
        published.migrate("old", folder)


def test_the_repositorys_published_values_pass_the_cli_check(capsys):
    assert _run("published", "check") == 0
    assert capsys.readouterr().out.count(", checked]") == len(published.names()) >= 13


# ---- dataset names read from metadata --------------------------------------------------------------

def test_an_unregistered_dataset_name_in_a_chapter_table_is_refused(tmp_path, monkeypatch):
    X, y = blobs(20, 3, 2)
    monkeypatch.setenv("LSI_BOOK_DATA", str(tmp_path / "data"))
    path = publish_scores(lsi.compute_lsi(X, y, solver="newton-step", progress=False), chapter="demo",
                          name="scores", dataset="digits")
    arrow = pq.read_table(path)
    meta = dict(arrow.schema.metadata)
    key = lsi.book.chapter_data.PUBLISHED_KEY
    info = json.loads(meta[key])
    info["dataset"] = 'x" onload="alert(1)'
    meta[key] = json.dumps(info).encode()
    pq.write_table(arrow.replace_schema_metadata(meta), path)
    with pytest.raises(ValueError, match="not registered"):
        published_tables(tmp_path / "data")
    with pytest.raises(ValueError, match="not registered"):
        published.add(path, folder=tmp_path / "published")
    assert not (tmp_path / "published").exists()


# ---- lsi published: bad input ----------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (("check", "--folder", "{tmp}/typo"), "does not exist; check --folder"),
    (("list", "--folder", "{tmp}/typo"), "does not exist; check --folder"),
    (("migrate", "--folder", "{tmp}/typo"), "does not exist; check --folder"),
    (("add", "{tmp}/missing.parquet", "--folder", "{tmp}/published"), "does not exist"),
    (("add", "{tmp}/F.npz", "--folder", "{tmp}/published"), "not a readable Parquet"),
    (("add", "{tmp}/plain.parquet", "--folder", "{tmp}/published"), "carries no run metadata"),
    (("add", "{tmp}/R.parquet", "--name", "../x", "--folder", "{tmp}/published"), "must be lower-case"),
    (("add", "{tmp}/R.parquet", "{tmp}/missing.parquet", "--folder", "{tmp}/published"), "does not exist"),
    (("chapter", "../etc", "--book-data", "{tmp}", "--folder", "{tmp}/published"), "has no data"),
    (("check", "x", "--folder", "{tmp}"), "takes no names"),
])
def test_bad_published_input_is_one_line_and_writes_nothing(result, tmp_path, capsys, argv, message):
    pd.DataFrame({"index": [0, 1], "lsi": [0.5, 0.25]}).to_parquet(tmp_path / "plain.parquet")
    assert _run("published", *(a.format(tmp=tmp_path) for a in argv)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and err.startswith("lsi published: error: ")
    assert not (tmp_path / "published").exists()


# ---- lsi merge: identities, every shard's record, bad input ----------------------------------------

@pytest.fixture
def shards(tmp_path):
    X, y = blobs(30, 3, 3)
    features = tmp_path / "F.npz"
    np.savez(features, features=X, labels=y)
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for path, indices in zip(paths, ("0:12", "12:30")):
        assert _run("compute", "--features", features, "--solver", "newton-step", "--indices", indices,
                    "--quiet", "--out", path) == 0
    return paths


def test_merge_records_every_shards_wall_time_device_and_commit(shards, tmp_path):
    a = lsi.load_table(shards[1])
    a.attrs["lsi"].update(device="cuda (a GPU)", commit="abc123", wall_time_s=7.0)
    lsi.save_table(a, shards[1])
    assert _run("merge", *shards, "--out", tmp_path / "M.parquet") == 0
    meta = lsi.load_table(tmp_path / "M.parquet").attrs["lsi"]
    first = lsi.load_table(shards[0]).attrs["lsi"]
    assert [(s["file"], s["device"], s["commit"], s["wall_time_s"], s["n_scored"]) for s in meta["shards"]] == [
        ("a.parquet", first["device"], first["commit"], first["wall_time_s"], 12),
        ("b.parquet", "cuda (a GPU)", "abc123", 7.0, 18)]
    assert meta["wall_time_s"] == pytest.approx(first["wall_time_s"] + 7.0)
    assert str(tmp_path) not in json.dumps(meta["shards"])


def _without_metadata(path):
    table = lsi.load_table(path)
    table.attrs = {}
    lsi.save_table(table, path)


@pytest.mark.parametrize("argv, message", [
    (("{tmp}/a.parquet", "{tmp}/missing.parquet"), "No result table"),
    (("{tmp}/a.parquet", "{tmp}/F.npz"), "not a readable Parquet"),
    (("{tmp}/a.parquet", "{tmp}/bare.parquet"), "carries no lsi run identity"),
    (("{tmp}/bare.parquet", "{tmp}/bare2.parquet"), "carries no lsi run identity"),
    (("{tmp}/a.parquet", "{tmp}/a.parquet"), "overlap"),
])
def test_bad_merge_input_is_one_line_and_writes_nothing(shards, tmp_path, capsys, argv, message):
    for bare in ("bare", "bare2"):
        shutil.copy(shards[1], tmp_path / f"{bare}.parquet")
        _without_metadata(tmp_path / f"{bare}.parquet")
    out = tmp_path / "M.parquet"
    assert _run("merge", *(a.format(tmp=tmp_path) for a in argv), "--out", out) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and err.startswith("lsi merge: error: ")
    assert not out.exists()


def test_merge_checks_the_output_before_reading_the_shards(shards, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert _run("merge", *shards, "--out", tmp_path / "file" / "M.parquet") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert _run("merge", *shards, "--out", tmp_path) == 2
    assert "is a folder" in capsys.readouterr().err
