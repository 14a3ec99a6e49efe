"""Text classification sets: IMDb and SST-2 (sentence level).

Ids: the original file path for IMDb from the mirror (``train/neg/0_3.txt``),
the row index otherwise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .base import Dataset
from .sources import hub_file, mirror_file, mirror_hint, read_parquet

SENTIMENT = ["negative", "positive"]
IMDB_REVISION = "e6281661ce1c48d982bc483cf8a173c1bbeb5d31"
"""Commit of the hub dataset ``stanfordnlp/imdb`` whose Parquet files :func:`load_imdb` reads without a mirror."""


def _text_dataset(name: str, split: str, table, text_col: str, source: str, id_col: str | None) -> Dataset:
    texts = table.column(text_col).to_pylist()
    labels = table.column("label").to_numpy().astype(np.int64)
    ids = (np.asarray(table.column(id_col).to_pylist(), dtype=object) if id_col
           else np.arange(len(labels)))
    return Dataset(name, split, "text", ids, labels, list(SENTIMENT), source, texts=texts)


def load_imdb(split: str, root: Path | None) -> Dataset:
    """IMDb Large Movie Review v1: mirror, else the hub's ``stanfordnlp/imdb`` Parquet files."""
    path = mirror_file(root, "imdb", f"{split}.parquet")
    if path is not None:
        return _text_dataset("imdb", split, read_parquet(path, ["text", "label", "file"]), "text",
                             f"mirror:{path}", "file")
    path = hub_file("stanfordnlp/imdb", f"plain_text/{split}-00000-of-00001.parquet", revision=IMDB_REVISION,
                    what=f"imdb ({split})", how=mirror_hint("imdb"))
    return _text_dataset("imdb", split, pq.read_table(path), "text", f"hub:stanfordnlp/imdb@{IMDB_REVISION}", None)


def load_sst2(split: str, root: Path | None) -> Dataset:
    """SST-2 sentence-level splits (train 6,920 / validation 872 / test 1,821, all labelled).

    Offline from the mirror; online from the hub's ``SetFit/sst2`` (the same
    sentence-level splits; ``stanfordnlp/sst2`` holds phrases and hides test labels).
    """
    path = mirror_file(root, "sst2", f"{split}.parquet")
    if path is not None:
        return _text_dataset("sst2", split, read_parquet(path, ["sentence", "label"]), "sentence",
                             f"mirror:{path}", None)
    path = hub_file("SetFit/sst2", f"default/{split}/0000.parquet", revision="refs/convert/parquet",
                    what=f"sst2 ({split})", how=mirror_hint("sst2"))
    return _text_dataset("sst2", split, pq.read_table(path), "text", "hub:SetFit/sst2", None)
