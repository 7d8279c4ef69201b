"""Small helpers that turn tables and plots into metadata a person can read in the UI."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
import polars as pl


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    text = str(value).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= 120 else text[:117] + "..."


def markdown_table(df: pl.DataFrame, max_rows: int = 50) -> dg.MetadataValue:
    """A polars frame as a markdown table (first `max_rows` rows)."""
    shown = df.head(max_rows)
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in shown.iter_rows()]
    if df.height > max_rows:
        lines.append(f"\n_{df.height - max_rows} more rows not shown_")
    return dg.MetadataValue.md("\n".join(lines))


def plot(png: bytes, alt: str) -> dg.MetadataValue:
    from climb_assets.core.plots import png_markdown

    return dg.MetadataValue.md(png_markdown(png, alt))


def counts(mapping: Mapping[str, int]) -> dg.MetadataValue:
    return dg.MetadataValue.json({str(k): int(v) for k, v in sorted(mapping.items())})
