"""Figures, galleries and tables for the book, rendered so they show without a network.

Charts are altair specifications rendered to static SVG by ``vl-convert`` (no
JavaScript, no CDN); image galleries are PNG contact sheets of the real
images; text galleries and tables are plain HTML. Every function returns an
object that displays itself in a notebook and in the built book.
"""
from __future__ import annotations

import html
import io
from collections.abc import Callable, Mapping
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
from IPython.display import HTML, Image

_WIDTH, _HEIGHT = 520, 260


class Figure:
    """An altair chart that displays as static SVG; ``.chart`` is the editable spec."""

    def __init__(self, chart: alt.TopLevelMixin):
        self.chart = chart

    def svg(self) -> str:
        import vl_convert

        return vl_convert.vegalite_to_svg(self.chart.to_dict())

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"image/svg+xml": self.svg()}

    def save(self, path: str) -> None:
        """Write the figure as SVG."""
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.svg())


def figure(chart: alt.TopLevelMixin) -> Figure:
    """Wrap any altair chart so that it renders offline."""
    return Figure(chart)


def histogram(values: pd.DataFrame, column: str = "lsi", *, group: str | None = None,
              bins: int = 50, log: bool = True, density: bool = True,
              title: str = "", xlabel: str | None = None) -> Figure:
    """Histogram of ``values[column]`` (log10 axis by default), one colour per ``group``.

    With ``density=True`` each group is normalised to fractions of its own
    size, so groups of very different sizes (clean vs flipped) compare fairly.
    """
    data = _positive(values[column].to_numpy(float), column) if log else values[column].to_numpy(float)
    x = np.log10(data) if log else data
    edges = np.histogram_bin_edges(x, bins=bins)
    groups = values[group].astype(str).to_numpy() if group else np.full(len(x), "all")
    rows = []
    for name in pd.unique(groups):
        counts, _ = np.histogram(x[groups == name], bins=edges)
        height = counts / max(counts.sum(), 1) if density else counts
        rows += [{"group": f"{name} (n={int(counts.sum())})", "start": lo, "end": hi, "height": h}
                 for lo, hi, h in zip(edges[:-1], edges[1:], height)]
    frame = pd.DataFrame(rows)
    label = xlabel or (f"log10 {column}" if log else column)
    chart = alt.Chart(frame, title=title).mark_bar(opacity=0.55, binSpacing=0).encode(
        x=alt.X("start:Q", title=label, scale=alt.Scale(zero=False)),
        x2="end:Q",
        y=alt.Y("height:Q", title="fraction of group" if density else "count", stack=None),
        y2=alt.datum(0),
        color=alt.Color("group:N", title=group or "", legend=None if group is None else alt.Legend()),
    ).properties(width=_WIDTH, height=_HEIGHT)
    return Figure(chart)


def scatter(frame: pd.DataFrame, x: str, y: str, *, color: str | None = None,
            log: bool = True, title: str = "") -> Figure:
    """Scatter of two score columns (log-log by default), e.g. diag vs full-Hessian LSI."""
    data = frame[[x, y] + ([color] if color else [])].copy()
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    if log:
        _positive(data[x].to_numpy(float), x)
        _positive(data[y].to_numpy(float), y)
    encoding = {"x": alt.X(f"{x}:Q", scale=scale), "y": alt.Y(f"{y}:Q", scale=scale)}
    if color:
        encoding["color"] = alt.Color(f"{color}:N")
    chart = alt.Chart(data, title=title).mark_circle(size=12, opacity=0.5).encode(**encoding)
    return Figure(chart.properties(width=360, height=360))


def bars(frame: pd.DataFrame, x: str, y: str, *, color: str | None = None,
         log: bool = False, title: str = "") -> Figure:
    """Bar chart of ``y`` per category ``x`` (e.g. wall time per solver)."""
    # A log axis has no zero: bars rise from a floor a factor 3 below the smallest value.
    values = frame[y].to_numpy(float)
    scale = (alt.Scale(type="log", domain=[float(_positive(values, y).min()) / 3, float(values.max()) * 3])
             if log else alt.Scale())
    encoding = {"x": alt.X(f"{x}:N", sort=None), "y": alt.Y(f"{y}:Q", scale=scale, stack=None)}
    if color:
        encoding["color"] = alt.Color(f"{color}:N")
        encoding["xOffset"] = alt.XOffset(f"{color}:N")
    chart = alt.Chart(frame, title=title).mark_bar().encode(**encoding)
    return Figure(chart.properties(width=360, height=_HEIGHT))


def lines(frame: pd.DataFrame, x: str, y: str, *, color: str | None = None,
          logx: bool = False, logy: bool = False, title: str = "") -> Figure:
    """Line chart with points, e.g. a quantity against a running parameter."""
    encoding = {"x": alt.X(f"{x}:Q", scale=alt.Scale(type="log") if logx else alt.Scale(zero=False)),
                "y": alt.Y(f"{y}:Q", scale=alt.Scale(type="log") if logy else alt.Scale(zero=False))}
    if color:
        encoding["color"] = alt.Color(f"{color}:N")
    chart = alt.Chart(frame, title=title).mark_line(point=True).encode(**encoding)
    return Figure(chart.properties(width=_WIDTH, height=_HEIGHT))


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
    :func:`lsi.analysis.extremes`); ``images`` maps the ``key`` column (a sample
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
