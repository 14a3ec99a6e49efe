"""Scores that chapters publish for readers: Parquet downloads, thumbnails and the sample explorer.

A chapter calls :func:`publish_scores` once per score table. It writes

- ``<data>/<chapter>/<name>.parquet``: the table, with a provenance record
  (chapter, data set, tier, corruption, classes, commit, date, versions) as
  JSON in the Parquet schema metadata under ``lsi.published``;
- ``<data>/<chapter>/<dataset>.thumbs.parquet``: one small JPEG (or a text
  snippet) per sample id, merged across calls.

``<data>`` is ``$LSI_BOOK_DATA``, which the book runner sets to the folder
beside the executed chapters (``book/data`` for the ``book`` profile).
The build reads these files back (:func:`published_tables`) to add the
"Take it away" section to each chapter and to write one explorer per data
set (:func:`explorer_payload`, :func:`write_thumbnails`).
"""
from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lsi.book.profiles import REPO
from lsi.results import PUBLISHED_KEY, atomic_write_bytes

THUMB_SIZE = 48
TEXT_CHARS = 300
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def data_dir() -> Path:
    """Where :func:`publish_scores` writes: ``$LSI_BOOK_DATA``, else ``_build/data``."""
    return Path(os.environ.get("LSI_BOOK_DATA") or REPO / "_build" / "data")


def safe_id(value: Any) -> str:
    """A file-name-safe form of a sample id (ids can be paths)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(value))


def thumb_path(dataset: str, sample_id: Any) -> str:
    """Site-root-relative URL of a sample's thumbnail, as the build writes it."""
    return f"thumbs/{dataset}/{safe_id(sample_id)}.jpg"


def publish_scores(table: pd.DataFrame, *, chapter: str, name: str, dataset: str,
                   classes: Sequence[str] | None = None, tier: str | None = None,
                   corruption: str = "none", score: str = "lsi",
                   original_label: str | Sequence[int] | np.ndarray | None = None,
                   corrupted: str | Sequence[bool] | np.ndarray | None = None,
                   thumbnails: Callable[[int], Any] | None = None,
                   texts: Callable[[int], str] | None = None, key: str = "index") -> Path:
    """Write ``table`` as a downloadable Parquet file with provenance, for the book's explorer.

    ``original_label`` is the clean label of every sample: a column of
    ``table`` or an array indexed by the ``key`` column (the sample's position
    in its data set); rows whose label differs are marked corrupted.
    ``corrupted`` marks them directly instead (a boolean column name or an
    array aligned with the table's rows), for corruptions that change the
    data rather than the label (lorem ipsum, feature noise).
    ``thumbnails`` (position -> PIL image) or ``texts``
    (position -> str) are called once per new sample id. Returns the path of
    the Parquet file.
    """
    for label, value in (("chapter", chapter), ("name", name), ("dataset", dataset)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise ValueError(f"{label}={value!r} must be lower-case letters, digits, '_' or '-'.")
    missing = [c for c in ("id", "label", score) if c not in table.columns]
    if missing:
        raise ValueError(f"The table has no column(s) {missing}; publish a compute_lsi table "
                         f"(columns index, id, label, {score}).")
    if thumbnails is not None and texts is not None:
        raise ValueError("Give thumbnails= (images) or texts= (texts), not both.")
    if (thumbnails is not None or texts is not None or not isinstance(original_label, (str, type(None)))) \
            and key not in table.columns:
        raise ValueError(f"The table has no {key!r} column to fetch samples by.")
    frame = table.copy()
    if original_label is not None:
        if isinstance(original_label, str):
            frame["original_label"] = frame[original_label].to_numpy()
        else:
            frame["original_label"] = np.asarray(original_label)[frame[key].to_numpy()]
        frame["corrupted"] = frame["original_label"].to_numpy() != frame["label"].to_numpy()
    if corrupted is not None:
        flags = frame[corrupted] if isinstance(corrupted, str) else corrupted
        frame["corrupted"] = np.asarray(flags, dtype=bool)
    from lsi.provenance import run_record

    record = run_record("cpu")
    info = {"chapter": chapter, "name": name, "dataset": dataset, "score": score,
            "tier": tier or str(table.attrs.get("lsi", {}).get("options", {}).get("solver", "")),
            "corruption": corruption, "classes": [str(c) for c in classes] if classes is not None else None,
            "rows": int(len(frame)), "profile": os.environ.get("LSI_BOOK_PROFILE", ""),
            "parameters": json.loads(os.environ.get("LSI_BOOK_PARAMETERS", "{}")),
            "commit": record["commit"], "date": record["date"], "versions": record["versions"],
            "run": table.attrs.get("lsi", {})}
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[PUBLISHED_KEY] = json.dumps(info, default=str).encode()
    sink = pa.BufferOutputStream()
    pq.write_table(arrow.replace_schema_metadata(meta), sink)
    path = data_dir() / chapter / f"{name}.parquet"
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    if thumbnails is not None or texts is not None:
        publish_thumbnails(chapter, dataset, frame["id"], frame[key],
                           images=thumbnails, texts=texts)
    return path


def publish_thumbnails(chapter: str, dataset: str, ids: Sequence[Any], positions: Sequence[int], *,
                       images: Callable[[int], Any] | None = None,
                       texts: Callable[[int], str] | None = None) -> Path:
    """Add one JPEG thumbnail (or text snippet) per new id to the chapter's store of ``dataset``."""
    from PIL import Image as PILImage

    path = data_dir() / chapter / f"{dataset}.thumbs.parquet"
    known = read_thumbnails(path) if path.is_file() else pd.DataFrame(
        {"id": pd.Series([], dtype=str), "kind": pd.Series([], dtype=str), "data": pd.Series([], dtype=object)})
    have = set(known["id"])
    rows = []
    for sample_id, position in zip(ids, positions):
        sid = str(sample_id)
        if sid in have:
            continue
        have.add(sid)
        if images is not None:
            picture = images(int(position)).convert("RGB")
            picture.thumbnail((THUMB_SIZE, THUMB_SIZE), PILImage.LANCZOS if picture.width > THUMB_SIZE
                              else PILImage.NEAREST)
            if picture.width < THUMB_SIZE // 2:  # tiny images (digits) are enlarged, pixels kept sharp
                factor = THUMB_SIZE // picture.width
                picture = picture.resize((picture.width * factor, picture.height * factor), PILImage.NEAREST)
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=85)
            rows.append({"id": sid, "kind": "image", "data": buffer.getvalue()})
        else:
            text = " ".join(str(texts(int(position))).replace("<br />", " ").split())
            text = text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS].rsplit(" ", 1)[0] + " …"
            rows.append({"id": sid, "kind": "text", "data": text.encode()})
    merged = pd.concat([known, pd.DataFrame(rows, columns=["id", "kind", "data"])], ignore_index=True)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(merged, preserve_index=False), sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return path


def read_thumbnails(path: str | Path) -> pd.DataFrame:
    """A thumbnail store as a frame with columns ``id``, ``kind``, ``data`` (bytes)."""
    frame = pq.read_table(path).to_pandas()
    frame["id"] = frame["id"].astype(str)
    return frame


def published_tables(folder: str | Path) -> list[tuple[dict, pd.DataFrame, Path]]:
    """Every table published under ``folder`` (``<chapter>/<name>.parquet``), with its record."""
    from lsi.published import check_dataset

    found = []
    for path in sorted(Path(folder).glob("*/*.parquet")):
        if path.name.endswith(".thumbs.parquet"):
            continue
        arrow = pq.read_table(path)
        raw = (arrow.schema.metadata or {}).get(PUBLISHED_KEY)
        if not raw:
            continue
        info = json.loads(raw)
        check_dataset(info.get("dataset"), path)  # the name goes into file paths and HTML attributes
        found.append((info, arrow.to_pandas(), path))
    return found


def explorer_payload(tables: list[tuple[dict, pd.DataFrame, Path]], dataset: str,
                     texts: dict[str, str] | None = None, has_thumbs: set[str] | None = None) -> dict:
    """The explorer's columnar JSON for one data set.

    One row per (chapter, corruption, sample): tables that differ only in
    their tier are joined on the sample id, each tier a score column. ``rank``
    is the rank (1 = highest) within the sample's class of the first tier's
    score, inside its group.
    """
    groups: dict[tuple[str, str], list[tuple[dict, pd.DataFrame]]] = {}
    for info, frame, _ in tables:
        if info.get("dataset") == dataset:
            groups.setdefault((info["chapter"], info.get("corruption", "none")), []).append((info, frame))
    counts: dict[str, int] = {}
    for group in groups.values():
        for info, frame in group:
            counts[_tier_name(info)] = counts.get(_tier_name(info), 0) + len(frame)
    tiers = sorted(counts, key=lambda t: (-counts[t], t))  # the tier with the most samples first
    classes: list[str] = []
    columns: dict[str, list] = {k: [] for k in ("id", "cls", "orig", "corr", "group", "rank", "thumb", "text")}
    scores: dict[str, list] = {tier: [] for tier in tiers}
    group_names = []
    for (chapter, corruption), members in groups.items():
        group_names.append(f"{chapter}: {corruption}")
        members = sorted(members, key=lambda m: -len(m[1]))  # the largest table ranks the samples
        info0 = members[0][0]
        names = next((info.get("classes") for info, _ in members if info.get("classes")), None) or []
        keep = ["id", "label", "original_label", "corrupted"]
        merged = pd.concat([frame[[c for c in keep if c in frame]] for _, frame in members], ignore_index=True)
        merged["id"] = merged["id"].astype(str)
        merged = merged.drop_duplicates("id")
        for info, frame in members:
            part = frame[["id", info.get("score", "lsi")]].copy()
            part["id"] = part["id"].astype(str)
            part = part.drop_duplicates("id").rename(columns={info.get("score", "lsi"): _tier_name(info)})
            merged = merged.merge(part, on="id", how="left")
        merged["label"] = merged["label"].fillna(-1).astype(int)
        first = _tier_name(info0)
        merged["rank"] = merged.groupby("label")[first].rank(ascending=False, method="first")

        def class_code(label: int) -> int:
            name = names[label] if 0 <= label < len(names) else str(label)
            if name not in classes:
                classes.append(name)
            return classes.index(name)

        columns["id"] += merged["id"].tolist()
        columns["cls"] += [class_code(int(v)) for v in merged["label"]]
        orig = (merged["original_label"].fillna(-1).astype(int) if "original_label" in merged
                else merged["label"])
        columns["orig"] += [class_code(int(v)) for v in orig]
        flags = (merged["corrupted"].fillna(False).astype(bool).to_numpy() if "corrupted" in merged
                 else np.zeros(len(merged), bool))
        columns["corr"] += flags.astype(int).tolist()
        columns["group"] += [len(group_names) - 1] * len(merged)
        columns["rank"] += [int(r) if r == r else None for r in merged["rank"]]
        columns["thumb"] += [1 if has_thumbs and i in has_thumbs else 0 for i in merged["id"]]
        columns["text"] += [(texts or {}).get(i, "") for i in merged["id"]]
        for tier in tiers:
            values = merged[tier] if tier in merged else pd.Series([np.nan] * len(merged))
            scores[tier] += [float(f"{v:.4g}") if v == v else None for v in values]
    if not any(columns["text"]):
        columns.pop("text")
    return {"dataset": dataset, "rows": len(columns["id"]), "classes": classes, "groups": group_names,
            "tiers": tiers, "columns": columns, "scores": scores,
            "sources": sorted({f"{info['chapter']}/{info['name']}.parquet"
                               for info, _, _ in tables if info.get("dataset") == dataset})}


def _tier_name(info: dict) -> str:
    score = info.get("score", "lsi")
    label = "LSI" if score == "lsi" else score
    return f"{label} ({info['tier']})" if info.get("tier") else label


def write_thumbnails(folder: str | Path, site: str | Path) -> dict[str, tuple[set[str], dict[str, str]]]:
    """Expand every ``<dataset>.thumbs.parquet`` under ``folder`` into ``site/thumbs/<dataset>/``.

    Returns, per data set, the ids that have an image and the text snippets.
    """
    out: dict[str, tuple[set[str], dict[str, str]]] = {}
    for path in sorted(Path(folder).glob("*/*.thumbs.parquet")):
        dataset = path.name[: -len(".thumbs.parquet")]
        images, texts = out.setdefault(dataset, (set(), {}))
        frame = read_thumbnails(path)
        target = Path(site) / "thumbs" / dataset
        for sample_id, kind, data in zip(frame["id"], frame["kind"], frame["data"]):
            if kind == "text":
                texts[sample_id] = bytes(data).decode()
            elif sample_id not in images:
                target.mkdir(parents=True, exist_ok=True)
                (target / f"{safe_id(sample_id)}.jpg").write_bytes(bytes(data))
                images.add(sample_id)
    return out
