"""The report's sections as markdown, for a Dagster metadata entry (MetadataValue.md).

The UI renders markdown with tables and data-URI images but drops raw HTML, so this is the form
of the report a user opens in one click from the asset page; the HTML page (`render_report`)
stays for `climb report`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any

from climb_assets.core.shared.report_html import Section, number

CELL_CHARS = 60
QUOTE_CHARS = 200
MAX_ROWS = 30


def _text(value: Any, limit: int = CELL_CHARS) -> str:
    """One line of plain text, cut at `limit`, with markdown's special characters escaped."""
    text = " ".join(number(value).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return re.sub(r"([`*_\[\]<>#])", r"\\\1", text)


def _table(caption: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    if not rows:
        return [f"_{_text(caption)}: none_", ""]
    columns = list(rows[0])
    lines = [f"**{_text(caption)}**", ""]
    lines.append("| " + " | ".join(_text(c) for c in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(_text(r.get(c)) for c in columns) + " |" for r in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        lines += ["", f"_{len(rows) - MAX_ROWS} more rows: see the HTML report_"]
    return [*lines, ""]


def _plot(alt: str, png: bytes) -> list[str]:
    encoded = base64.b64encode(png).decode("ascii")
    alt = alt.replace("[", "(").replace("]", ")")
    return [f"![{alt}](data:image/png;base64,{encoded})", ""]


def _quotes(caption: str, texts: Sequence[str]) -> list[str]:
    return [f"**{_text(caption)}**", "", *(f"> {_text(t, QUOTE_CHARS)}\n" for t in texts), ""]


def render_markdown(
    title: str, subtitle: str, sections: Sequence[Section], footer: str = ""
) -> str:
    """The sections as one markdown document: headings, notes, tables, plots, quotes."""
    lines = [f"# {_text(title)}", "", f"_{_text(subtitle, 400)}_", ""]
    for section in sections:
        lines += [f"## {_text(section.title)}", ""]
        lines += [item for note in section.notes for item in (_text(note, 1000), "")]
        lines += [line for caption, rows in section.tables for line in _table(caption, rows)]
        lines += [line for alt, png in section.plots for line in _plot(alt, png)]
        lines += [line for caption, texts in section.quotes for line in _quotes(caption, texts)]
    if footer:
        lines.append(footer)
    return "\n".join(lines).rstrip() + "\n"
