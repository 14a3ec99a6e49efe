"""The claim box and the summary of a chapter, rendered from :mod:`lsi.claims` verdicts for the page.

:func:`box` is the *Paper's claim vs our result* table (HTML); it also stores its claims as data in the
output's metadata under :data:`lsi.claims.CLAIMS_METADATA`, which the reproduction report reads.
:func:`summary` is the chapter's generated summary (Markdown), one bullet per claim, so the two agree.
"""
from __future__ import annotations

import html
from collections.abc import Sequence

from IPython.display import HTML, Markdown

from lsi.claims import CANNOT_TELL, CLAIMS_METADATA, NO, PARTLY, STATUSES, YES, Claim


def box(claims: Sequence[Claim], *, title: str = "Paper's claim vs our result"):
    """The chapter's claim box: claim, this run's numbers, the tier behind them, the verdict.

    The claims are also stored as data, in the output's metadata under :data:`CLAIMS_METADATA`.
    """
    colour = {YES: "#1b7837", PARTLY: "#b35806", NO: "#b2182b", CANNOT_TELL: "#4d4d4d"}
    body = "".join(
        f"<tr><td style='text-align:left{';padding-left:2em' if c.sub else ''}'>"
        f"{'&#8627; ' if c.sub else ''}{html.escape(c.claim)}</td>"
        f"<td style='text-align:left'>{html.escape(c.ours)}</td>"
        f"<td>{html.escape(c.tier or '-')}</td>"
        f"<td style='text-align:left'><strong style='color:{colour[c.verdict.status]}'>"
        f"{html.escape(c.verdict.status)}</strong>"
        f"{html.escape(': ' + c.verdict.detail) if c.verdict.detail else ''}"
        f"<br><small>rule: <code>{html.escape(c.verdict.rule or 'by eye')}</code></small></td></tr>"
        for c in claims)
    return HTML(
        f"<div class='admonition important'><p class='admonition-title'>{html.escape(title)}</p>"
        f"<table class='lsi-table'><thead><tr><th>paper</th><th>this run</th><th>tier</th>"
        f"<th>reproduced?</th></tr></thead><tbody>{body}</tbody></table>"
        f"<p><small>Rules and thresholds: <code>lsi.claims</code>.</small></p></div>",
        metadata={CLAIMS_METADATA: [c.to_dict() for c in claims]})


def summary(claims: Sequence[Claim], facts: Sequence[str] = (), *, whose: str = "the paper's"):
    """The chapter's summary, generated from its claims and measured facts (Markdown).

    ``facts`` are sentences the chapter builds from its own numbers; each claim
    adds one bullet with its verdict, so the summary cannot contradict the box.
    ``whose`` names where the claims come from (a chapter that tests claims
    beyond the paper passes, e.g., ``"these"``).
    """
    main = [c for c in claims if not c.sub]
    counts = {s: sum(c.verdict.status == s for c in main) for s in STATUSES}
    lines = [f"- {fact}" for fact in facts]
    for c in claims:
        tier = f" ({c.tier} tier)" if c.tier else ""
        lines.append(f"{'    ' if c.sub else ''}- *{c.claim}* **{c.verdict}**{tier}: {c.ours}.")
    head = (f"Of {whose} {len(main)} claims tested here, {counts[YES]} reproduced, "
            f"{counts[PARTLY]} partly, {counts[NO]} not, {counts[CANNOT_TELL]} cannot tell.")
    return Markdown("## Summary\n\n" + head + "\n\n" + "\n".join(lines))
