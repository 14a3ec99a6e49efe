"""Figures, galleries and tables for the book, rendered so they show without a network.

Charts are altair specifications. In the built book they are interactive
vega-lite charts (tooltips, zoom and pan, legend selections), drawn by the
vega JavaScript that the book ships as one static file (no CDN); the static
SVG rendered by ``vl-convert`` sits in the same block, as the fallback for
readers without JavaScript and for print. Image galleries are PNG contact
sheets of the real images; text galleries and tables are plain HTML. Every
function returns an object that displays itself in a notebook and in the
built book.

Scatter and strip plots can show each sample on hover: pass ``thumbnails=``
(position -> PIL image) or ``texts=`` (position -> str) and ``dataset=``;
the thumbnails are written once per sample to the book's data folder (see
:mod:`lsi.book.chapter_data`) and the tooltip shows them with the sample's label, score
and rank.
"""
from __future__ import annotations

import html
import io
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
from IPython.display import HTML, Image

_WIDTH, _HEIGHT = 520, 260


class Figure:
    """An altair chart: interactive in the book, static SVG as its fallback; ``.chart`` is the spec."""

    def __init__(self, chart: alt.TopLevelMixin):
        self.chart = chart

    def svg(self) -> str:
        """The static SVG. Links (``href``) are left out: the renderer would resolve them
        against a web address, and the static copy is for print and no-JS readers."""
        import vl_convert

        return vl_convert.vegalite_to_svg(_without_links(self.chart.to_dict()))

    def html(self, svg: str | None = None) -> str:
        """The book's chart block: the static SVG, a slot for the live chart and the spec as JSON.

        The book's ``lsi-charts.js`` draws the live chart from the spec and
        hides the SVG; without JavaScript, and in print, the SVG shows.
        """
        spec = json.dumps(self.chart.to_dict(), separators=(",", ":"), default=str)
        spec = spec.replace("</", "<\\/")  # a JSON string may not close the script element
        return (f'<div class="lsi-chart"><div class="lsi-chart-static">{svg or self.svg()}</div>'
                f'<div class="lsi-chart-live"></div>'
                f'<script type="application/json" class="lsi-chart-spec">{spec}</script></div>')

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        svg = self.svg()
        return {"text/html": self.html(svg), "image/svg+xml": svg}

    def save(self, path: str) -> None:
        """Write the figure as SVG."""
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.svg())


def _without_links(spec: Any) -> Any:
    if isinstance(spec, dict):
        return {k: _without_links(v) for k, v in spec.items()
                if not (k == "href" and isinstance(v, dict) and "field" in v)}
    if isinstance(spec, list):
        return [_without_links(v) for v in spec]
    return spec


def figure(chart: alt.TopLevelMixin) -> Figure:
    """Wrap any altair chart so that it renders offline."""
    return Figure(chart)


def histogram(values: pd.DataFrame, column: str = "lsi", *, group: str | None = None,
              bins: int = 50, log: bool = True, density: bool = True,
              title: str = "", xlabel: str | None = None, explore: str | None = None) -> Figure:
    """Histogram of ``values[column]`` (log10 axis by default), one colour per ``group``.

    With ``density=True`` each group is normalised to fractions of its own
    size, so groups of very different sizes (clean vs flipped) compare fairly.
    Hovering a bin shows its range and count; clicking a legend entry
    highlights its group. With ``explore="<dataset>"``, clicking a bin opens
    that data set's sample explorer filtered to the bin's range.
    """
    data = _positive(values[column].to_numpy(float), column) if log else values[column].to_numpy(float)
    x = np.log10(data) if log else data
    edges = np.histogram_bin_edges(x, bins=bins)
    groups = values[group].astype(str).to_numpy() if group else np.full(len(x), "all")
    rows = []
    for name in pd.unique(groups):
        counts, _ = np.histogram(x[groups == name], bins=edges)
        height = counts / max(counts.sum(), 1) if density else counts
        for lo, hi, h, n in zip(edges[:-1], edges[1:], height, counts):
            low, high = (10 ** lo, 10 ** hi) if log else (lo, hi)
            row = {"group": f"{name} (n={int(counts.sum())})", "start": lo, "end": hi, "height": h,
                   "count": int(n), "range": f"{low:.3g} to {high:.3g}"}
            if explore:
                row["href"] = f"book/explore/{explore}.html#lo={low:.6g}&hi={high:.6g}"
            rows.append(row)
    frame = pd.DataFrame(rows)
    label = xlabel or (f"log10 {column}" if log else column)
    pick = alt.selection_point(fields=["group"], bind="legend")
    encoding = dict(
        x=alt.X("start:Q", title=label, scale=alt.Scale(zero=False)),
        x2="end:Q",
        y=alt.Y("height:Q", title="fraction of group" if density else "count", stack=None),
        y2=alt.datum(0),
        color=alt.Color("group:N", title=group or "", legend=None if group is None else alt.Legend()),
        opacity=alt.condition(pick, alt.value(0.6), alt.value(0.1)),
        tooltip=[alt.Tooltip("group:N", title=group or "group"), alt.Tooltip("range:N", title=column),
                 alt.Tooltip("count:Q", title="samples")])
    if explore:
        encoding["href"] = alt.Href("href:N")
    chart = alt.Chart(frame, title=title).mark_bar(binSpacing=0).encode(**encoding).add_params(pick)
    return Figure(chart.properties(width=_WIDTH, height=_HEIGHT))


def _hover(data: pd.DataFrame, frame: pd.DataFrame, tooltip: list[str] | None, *,
           thumbnails: Callable[[int], Any] | None, texts: Callable[[int], str] | None,
           dataset: str | None, key: str) -> tuple[pd.DataFrame, list]:
    """Add the hover columns (thumbnail URL or text snippet) and the tooltip encodings."""
    fields = list(tooltip or [])
    for name in fields:
        data[name] = frame[name].to_numpy()
    items = [alt.Tooltip(f"{name}:{'Q' if pd.api.types.is_float_dtype(frame[name]) else 'N'}",
                         format=".3g" if pd.api.types.is_float_dtype(frame[name]) else "")
             if pd.api.types.is_float_dtype(frame[name]) else alt.Tooltip(f"{name}:N")
             for name in fields]
    if thumbnails is not None or texts is not None:
        from lsi.book import chapter_data

        if not dataset:
            raise ValueError("thumbnails=/texts= need dataset= (the data set's registered name).")
        if key not in frame or "id" not in frame:
            raise ValueError(f"thumbnails=/texts= need the columns 'id' and {key!r} in the frame.")
        chapter = os.environ.get("LSI_BOOK_CHAPTER", "notebook")
        chapter_data.publish_thumbnails(chapter, dataset, frame["id"], frame[key], images=thumbnails, texts=texts)
        if thumbnails is not None:
            data["image"] = [chapter_data.thumb_path(dataset, i) for i in frame["id"]]
            items.insert(0, alt.Tooltip("image:N"))
        else:
            snippets = {}
            for i, position in zip(frame["id"], frame[key]):
                text = " ".join(str(texts(int(position))).replace("<br />", " ").split())
                snippets[i] = text if len(text) <= 160 else text[:160].rsplit(" ", 1)[0] + " …"
            data["text"] = [snippets[i] for i in frame["id"]]
            items.insert(0, alt.Tooltip("text:N"))
    return data, items


def scatter(frame: pd.DataFrame, x: str, y: str, *, color: str | None = None,
            log: bool = True, title: str = "", tooltip: list[str] | None = None,
            thumbnails: Callable[[int], Any] | None = None, texts: Callable[[int], str] | None = None,
            dataset: str | None = None, key: str = "index", max_points: int | None = None,
            seed: int = 0) -> Figure:
    """Scatter of two score columns (log-log by default), e.g. diag vs full-Hessian LSI.

    Zoom and pan with the mouse. ``tooltip`` lists columns shown on hover;
    with ``thumbnails=`` (position -> PIL image) or ``texts=`` (position ->
    str) and ``dataset=``, the hover also shows the sample itself (fetched by
    the ``key`` column). With ``max_points``, a larger frame is drawn as a
    seeded uniform random sample of that many rows (``seed``), and the title
    says so: the page stays light, and statistics belong to the caller's full data.
    """
    if max_points is not None and len(frame) > max_points:
        shown = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_points, replace=False))
        title = f"{title} ({max_points:,} of {len(frame):,} points drawn at random)".strip()
        frame = frame.iloc[shown]
    data = frame[[x, y] + ([color] if color else [])].copy()
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    if log:
        _positive(data[x].to_numpy(float), x)
        _positive(data[y].to_numpy(float), y)
    data, items = _hover(data, frame, tooltip, thumbnails=thumbnails, texts=texts, dataset=dataset, key=key)
    encoding = {"x": alt.X(f"{x}:Q", scale=scale), "y": alt.Y(f"{y}:Q", scale=scale),
                "tooltip": items + [alt.Tooltip(f"{x}:Q", format=".3g"), alt.Tooltip(f"{y}:Q", format=".3g")]}
    if color:
        encoding["color"] = alt.Color(f"{color}:N")
    chart = alt.Chart(data, title=title).mark_circle(size=14, opacity=0.55).encode(**encoding)
    return Figure(chart.properties(width=360, height=360).interactive())


def strip(frame: pd.DataFrame, score: str = "lsi", group: str = "label", *, log: bool = True,
          title: str = "", tooltip: list[str] | None = None,
          thumbnails: Callable[[int], Any] | None = None, texts: Callable[[int], str] | None = None,
          dataset: str | None = None, key: str = "index", rank_by: str | None = "label",
          seed: int = 0) -> Figure:
    """One jittered row of points per ``group`` along the ``score`` axis (log by default).

    Every point is a sample: hovering shows its ``tooltip`` columns, its score,
    its rank within ``rank_by`` (1 = highest score; e.g. within its class) and,
    with ``thumbnails=``/``texts=`` and ``dataset=``, the sample itself.
    Zoom and pan along the score axis with the mouse.
    """
    if log:
        _positive(frame[score].to_numpy(float), score)
    data = frame[[score]].copy()
    data[group] = frame[group].astype(str).to_numpy()
    data["jitter"] = np.random.default_rng(seed).uniform(-1, 1, len(frame))
    extra = []
    if rank_by:
        data["rank"] = frame.groupby(rank_by)[score].rank(ascending=False, method="first").astype(int).to_numpy()
        extra = [alt.Tooltip("rank:Q", title=f"rank in its {'class' if rank_by == 'label' else rank_by}")]
    data, items = _hover(data, frame, tooltip, thumbnails=thumbnails, texts=texts, dataset=dataset, key=key)
    chart = alt.Chart(data, title=title).mark_circle(size=14, opacity=0.55).encode(
        x=alt.X(f"{score}:Q", scale=alt.Scale(type="log") if log else alt.Scale(zero=False)),
        y=alt.Y(f"{group}:N", title=group),
        yOffset=alt.YOffset("jitter:Q", scale=alt.Scale(domain=[-1.6, 1.6])),
        color=alt.Color(f"{group}:N", legend=None),
        tooltip=items + [alt.Tooltip(f"{group}:N"), alt.Tooltip(f"{score}:Q", format=".3g")] + extra)
    chart = chart.properties(width=_WIDTH, height=alt.Step(70)).interactive(bind_y=False)
    return Figure(chart)


def bars(frame: pd.DataFrame, x: str, y: str, *, color: str | None = None,
         log: bool = False, title: str = "") -> Figure:
    """Bar chart of ``y`` per category ``x`` (e.g. wall time per solver)."""
    # A log axis has no zero: bars rise from a floor a factor 3 below the smallest value.
    values = frame[y].to_numpy(float)
    scale = (alt.Scale(type="log", domain=[float(_positive(values, y).min()) / 3, float(values.max()) * 3])
             if log else alt.Scale())
    encoding = {"x": alt.X(f"{x}:N", sort=None), "y": alt.Y(f"{y}:Q", scale=scale, stack=None),
                "tooltip": [alt.Tooltip(f"{x}:N"), alt.Tooltip(f"{y}:Q", format=".4g")]}
    if color:
        encoding["color"] = alt.Color(f"{color}:N")
        encoding["xOffset"] = alt.XOffset(f"{color}:N")
        encoding["tooltip"].insert(1, alt.Tooltip(f"{color}:N"))
    chart = alt.Chart(frame, title=title).mark_bar().encode(**encoding)
    return Figure(chart.properties(width=360, height=_HEIGHT))


def lines(frame: pd.DataFrame, x: str, y: str, *, color: str | None = None,
          logx: bool = False, logy: bool = False, title: str = "") -> Figure:
    """Line chart with points, e.g. a quantity against a running parameter."""
    encoding = {"x": alt.X(f"{x}:Q", scale=alt.Scale(type="log") if logx else alt.Scale(zero=False)),
                "y": alt.Y(f"{y}:Q", scale=alt.Scale(type="log") if logy else alt.Scale(zero=False)),
                "tooltip": [alt.Tooltip(f"{x}:Q", format=".4g"), alt.Tooltip(f"{y}:Q", format=".4g")]}
    if color:
        encoding["color"] = alt.Color(f"{color}:N")
        encoding["tooltip"].insert(0, alt.Tooltip(f"{color}:N"))
    chart = alt.Chart(frame, title=title).mark_line(point=True).encode(**encoding)
    return Figure(chart.properties(width=_WIDTH, height=_HEIGHT))


def intervals(frame: pd.DataFrame, x: str, y: str = "median", *, low: str = "low", high: str = "high",
              color: str | None = None, logy: bool = True, title: str = "") -> Figure:
    """Points with interval bars (e.g. medians with bootstrap intervals) per category ``x``."""
    scale = alt.Scale(type="log") if logy else alt.Scale(zero=False)
    base = alt.Chart(frame, title=title)
    colour = {"color": alt.Color(f"{color}:N")} if color else {}
    bars = base.mark_rule().encode(x=alt.X(f"{x}:N", sort=None), y=alt.Y(f"{low}:Q", scale=scale, title=y),
                                   y2=f"{high}:Q", **colour)
    points = base.mark_point(filled=True, size=60).encode(x=alt.X(f"{x}:N", sort=None),
                                                          y=alt.Y(f"{y}:Q", scale=scale), **colour)
    return Figure((bars + points).properties(width=_WIDTH, height=_HEIGHT))


def _positive(values: np.ndarray, name: str) -> np.ndarray:
    bad = ~(values > 0)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} value(s) <= 0 or NaN, which a log axis "
                         f"cannot show; pass log=False or filter them first.")
    return values


def image_gallery(extremes: pd.DataFrame, images: Mapping[Any, Any] | Callable[[Any], Any], *,
                  key: str = "id", size: int = 72, title: str = "", score: str = "lsi",
                  score_name: str | None = None) -> Image:
    """Contact sheet: one row per class, lowest-scoring images left, highest right.

    ``extremes`` has columns ``class``, ``end`` (``"lowest"``/``"highest"``),
    ``rank``, ``id``, ``index`` and the ``score`` column (as from
    :func:`lsi.stats.extremes`); ``images`` maps the ``key`` column (a sample
    id, or its row ``index``) to a PIL image, or is a callable doing so (e.g.
    ``dataset.image``). ``score_name`` labels the two halves (default: ``LSI``
    for ``score="lsi"``, else the column name).
    """
    from PIL import Image as PILImage, ImageDraw, ImageFont

    fetch = images if callable(images) else images.__getitem__
    score_name = score_name or _score_name(score)
    classes = list(pd.unique(extremes["class"]))
    k = int(extremes["rank"].max()) + 1
    font = ImageFont.load_default(size=12)
    label_w, gap, cell_h, top = 110, 24, size + 16, 22 + (18 if title else 0)
    width = label_w + 2 * k * (size + 4) + gap
    sheet = PILImage.new("RGB", (width, top + len(classes) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 2), title, fill="black", font=ImageFont.load_default(size=14))
    for side, end in enumerate(("lowest", "highest")):
        x0 = label_w + side * (k * (size + 4) + gap)
        draw.text((x0, top - 18), f"{end} {score_name}", fill="black", font=font)
    for row, name in enumerate(classes):
        y = top + row * cell_h
        draw.text((4, y + size // 2 - 6), str(name)[:16], fill="black", font=font)
        for side, end in enumerate(("lowest", "highest")):
            picks = extremes[(extremes["class"] == name) & (extremes["end"] == end)].sort_values("rank")
            for _, pick in picks.iterrows():
                x = label_w + side * (k * (size + 4) + gap) + int(pick["rank"]) * (size + 4)
                picture = fetch(pick[key]).convert("RGB")
                picture = picture.resize((size, size), PILImage.NEAREST if picture.width < size
                                         else PILImage.LANCZOS)
                sheet.paste(picture, (x, y))
                draw.text((x, y + size + 1), f"{pick[score]:.2g}", fill="dimgray",
                          font=ImageFont.load_default(size=10))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return Image(data=buffer.getvalue(), format="png")


def _score_name(score: str) -> str:
    return "LSI" if score == "lsi" else score


def text_gallery(extremes: pd.DataFrame, texts: Mapping[Any, str] | Callable[[Any], str], *,
                 key: str = "id", max_chars: int = 600, score: str = "lsi") -> HTML:
    """Readable table of texts (e.g. reviews) with their class, ``score`` and rank.

    ``texts`` maps the ``key`` column to a string (or is a callable, e.g.
    ``dataset.text``); long texts are cut at ``max_chars`` characters with an ellipsis.
    """
    fetch = texts if callable(texts) else texts.__getitem__
    rows = []
    for _, pick in extremes.iterrows():
        text = " ".join(str(fetch(pick[key])).replace("<br />", " ").split())
        shown = text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0] + " …"
        rows.append(
            f"<tr><td>{html.escape(str(pick['class']))}</td><td>{html.escape(str(pick['end']))}</td>"
            f"<td>{pick[score]:.3g}</td><td style='text-align:left'>{html.escape(shown)}</td></tr>")
    return HTML(
        "<table class='lsi-text-gallery'><thead><tr><th>class</th><th>end</th>"
        f"<th>{html.escape(_score_name(score))}</th>"
        "<th>text</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def table(frame: pd.DataFrame, *, max_rows: int = 12, digits: int = 4) -> HTML:
    """HTML table showing at most ``max_rows`` rows (head and tail) and the total count."""
    shown = frame.to_html(max_rows=max_rows, index=False, border=0,
                          float_format=lambda v: f"{v:.{digits}g}", classes="lsi-table")
    note = (f"<p><em>{len(frame):,} rows; showing the first and last {max_rows // 2}.</em></p>"
            if len(frame) > max_rows else "")
    return HTML(shown + note)


def key_values(values: Mapping[str, Any], *, title: str = "") -> HTML:
    """Two-column HTML table of settings or provenance (nested dicts are flattened)."""
    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                   f"<td style='text-align:left'>{html.escape(_short(v))}</td></tr>"
                   for k, v in _flatten(values))
    caption = f"<caption>{html.escape(title)}</caption>" if title else ""
    return HTML(f"<table class='lsi-table'>{caption}<tbody>{rows}</tbody></table>")


def _flatten(values: Mapping[str, Any], prefix: str = ""):
    for key, value in values.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def provenance(record: Mapping[str, Any], **facts: Any) -> HTML:
    """The chapter's provenance block: what it computed from, then where, when and how long.

    ``record`` is :func:`lsi.provenance.run_record` taken when the chapter
    started (it holds the profile and parameters); ``facts`` are the chapter's
    own entries (data, encoder, probe, options, ...), shown first. The chapter's
    wall time is measured from ``record["date"]`` to now.
    """
    wall = pd.Timestamp.now(tz="UTC") - pd.Timestamp(record["date"])
    fixed = {key: record[key] for key in ("profile", "parameters", "commit", "date", "device")
             if key in record}
    return key_values({**facts, **fixed, "chapter wall time": str(wall.round("s")),
                       "versions": record["versions"]}, title="How this chapter was computed")


def note(text: str):
    """A paragraph of Markdown built by the chapter from its own numbers."""
    from IPython.display import Markdown

    return Markdown(text)


def caption_gallery(picks: pd.DataFrame, image: Callable[[Any], Any], text: Callable[[Any], str], *,
                    score: str = "lsi", key: str = "index", size: int = 96, title: str = "") -> HTML:
    """Image-caption pairs side by side: thumbnail, caption and ``score``, one row per pick.

    ``picks`` has the ``key`` column (passed to ``image`` and ``text``), ``score``
    and optionally ``end`` (lowest/highest) and ``note`` columns; ``image`` returns
    a PIL image, ``text`` the caption.
    """
    import base64

    rows = []
    for _, pick in picks.iterrows():
        picture = image(pick[key]).convert("RGB")
        picture.thumbnail((size, size))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        data = base64.b64encode(buffer.getvalue()).decode()
        extra = "".join(f"<td>{html.escape(str(pick[c]))}</td>" for c in ("end", "note") if c in picks)
        rows.append(f"<tr>{extra}<td><img src='data:image/png;base64,{data}' alt='pair {pick[key]}'></td>"
                    f"<td style='text-align:left'>{html.escape(str(text(pick[key])))}</td>"
                    f"<td>{pick[score]:.3g}</td></tr>")
    head = "".join(f"<th>{c}</th>" for c in ("end", "note") if c in picks)
    caption = f"<p><strong>{html.escape(title)}</strong></p>" if title else ""
    return HTML(f"{caption}<table class='lsi-caption-gallery'><thead><tr>{head}<th>image</th><th>caption</th>"
                f"<th>{html.escape(score)}</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
