"""A self-contained HTML page of the latest search: sections of tables and base64 PNG plots, no
script and no external file, so it opens from disk, in a mail or an artifact store alike."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; } .note { color: #666; }
blockquote { margin: .3em 0 .3em 1em; color: #444; font-size: 12px; }
.stale { background: #fff3cd; border: 2px solid #d39e00; padding: .2em 1em; margin: 1em 0; }
.stale h2 { margin-top: .5em; border: none; color: #8a5a00; }
"""


@dataclass
class Section:
    """A heading with, in order, notes (paragraphs), tables and plots; a `warning` section is
    set off in a coloured box (results whose inputs no longer belong together)."""

    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[tuple[str, Sequence[dict[str, Any]]]] = field(default_factory=list)
    plots: list[tuple[str, bytes]] = field(default_factory=list)
    quotes: list[tuple[str, list[str]]] = field(default_factory=list)
    warning: bool = False


def number(value: Any) -> str:
    """Floats to 4 significant digits; everything else as text."""
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(number(v) for v in value)
    return "" if value is None else str(value)


def _table(caption: str, rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return f"<p class=note>{html.escape(caption)}: none</p>"
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if isinstance(row.get(c), int | float) else ''}>"
            f"{html.escape(number(row.get(c)))}</td>"
            for c in columns
        )
        + "</tr>"
        for row in rows
    )
    return f"<h3>{html.escape(caption)}</h3><table><tr>{head}</tr>{body}</table>"


def _plot(alt: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _quotes(caption: str, texts: list[str], limit: int = 300) -> str:
    shown = "".join(
        f"<blockquote>{html.escape(t if len(t) <= limit else t[: limit - 3] + '...')}</blockquote>"
        for t in texts
    )
    return f"<p><b>{html.escape(caption)}</b></p>{shown}"


def render_report(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole page as one string."""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class=note>{html.escape(subtitle)}</p>",
    ]
    for section in sections:
        parts.append("<div class=stale>" if section.warning else "")
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(note)}</p>" for note in section.notes]
        parts += [_table(caption, rows) for caption, rows in section.tables]
        parts += [_plot(alt, png) for alt, png in section.plots]
        parts += [_quotes(caption, texts) for caption, texts in section.quotes]
        parts.append("</div>" if section.warning else "")
    parts.append("</body></html>")
    return "\n".join(parts)
