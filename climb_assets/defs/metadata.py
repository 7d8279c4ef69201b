"""Small helpers that turn tables and plots into metadata a person can read in the UI."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl

from climb_assets.core.clustering.naming import round_for_reading

if TYPE_CHECKING:
    from climb_assets.core.shared.report_html import Section
    from climb_assets.defs.report import WrittenReport

_WEIGHT_COLUMN = re.compile(r"^w_(\d+)$")


# Longest text in a table cell: the asset page gives a metadata table about 700 px, and
# longer cells push the columns on their right out of sight.
CELL_CHARS = 60


def _cut(text: str, limit: int = CELL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "n/a"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return _cut(" ".join(str(value).split())).replace("|", "\\|")


def _column_type(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype == pl.Boolean:
        return "bool"
    return "string" if dtype in (pl.Utf8, pl.Categorical) else str(dtype).lower()


def column_schema(df: pl.DataFrame | pl.Schema | Mapping[str, pl.DataType]) -> dg.TableSchema:
    """The columns of a frame (or schema) as Dagster's table schema."""
    schema = df.schema if isinstance(df, pl.DataFrame) else df
    return dg.TableSchema(
        columns=[dg.TableColumn(name, _column_type(dtype)) for name, dtype in schema.items()]
    )


def parquet_schema(path: Path) -> dg.TableSchema:
    """The columns of a Parquet file, read from its footer only."""
    return column_schema(pl.read_parquet_schema(path))


def _record_value(value: Any) -> Any:
    if isinstance(value, float):
        rounded = round_for_reading(value)
        return "n/a" if rounded is None else rounded  # NaN and infinities
    if isinstance(value, list | tuple):
        return _cut(", ".join(str(_record_value(v)) for v in value))
    if value is None:
        return "n/a"
    if isinstance(value, int | bool):
        return value
    return _cut(" ".join(str(value).split()))


def table(df: pl.DataFrame, max_rows: int = 50) -> dg.MetadataValue:
    """A polars frame as a table the asset page shows inline: floats rounded for reading, lists
    joined, long texts cut (first `max_rows` rows)."""
    shown = _short_headers(df.head(max_rows))
    records = [
        dg.TableRecord({k: _record_value(v) for k, v in row.items()})
        for row in shown.iter_rows(named=True)
    ]
    types = {name: pl.Utf8 if dtype.is_nested() else dtype for name, dtype in shown.schema.items()}
    return dg.MetadataValue.table(records, schema=column_schema(types))


HEADER_CHARS = 24


def _short_headers(df: pl.DataFrame) -> pl.DataFrame:
    """Long column names (super-cluster names as weight columns) cut, unless that makes two
    alike."""
    short = {c: _cut(c, HEADER_CHARS) for c in df.columns}
    return df.rename(short) if len(set(short.values())) == len(short) else df


def table_metadata(df: pl.DataFrame, path: Path | None = None) -> dict[str, Any]:
    """Dagster's standard keys for a table asset: row count and column schema."""
    schema = parquet_schema(path) if path is not None and path.exists() else column_schema(df)
    return {"dagster/row_count": df.height, "dagster/column_schema": schema}


def weight_name(column: str, names: Mapping[int, str]) -> str:
    """A weight column `w_<i>` as its super-cluster's name (`3: bible, lord, god`)."""
    match = _WEIGHT_COLUMN.match(column)
    return names.get(int(match.group(1)), column) if match else column


RUN_COLUMNS = ("candidate_id", "iteration", "source", "objective", "predicted")


def runs_table(runs: pl.DataFrame, max_rows: int) -> dg.MetadataValue:
    """Proxy runs narrow enough for the asset page: id, round, source, objective, prediction
    and the mixture as one 'super-cluster: weight' text that wraps. Every score column stays
    in the runs' Parquet files (`climb sql`, view proxy_runs)."""
    from climb_assets.core.search.mixtures import WEIGHTS_TEXT, weights_text

    weights = sorted((c for c in runs.columns if _WEIGHT_COLUMN.match(c)), key=lambda c: int(c[2:]))
    texts = [weights_text(row) for row in runs.select(weights).rows()]
    shown = runs.select(c for c in RUN_COLUMNS if c in runs.columns)
    return table(shown.with_columns(pl.Series(WEIGHTS_TEXT, texts, pl.String)), max_rows)


def with_names(df: pl.DataFrame, names: Mapping[int, str]) -> pl.DataFrame:
    """Weight columns `w_<i>` renamed to super-cluster names."""
    return df.rename({c: weight_name(c, names) for c in df.columns})


SERVE_COMMAND = "climb report --serve"


def report_metadata(report: WrittenReport) -> dict[str, dg.MetadataValue]:
    """The report written by `write_report`, embedded as markdown (one click on the asset page:
    '[Show Markdown]'), and the command that serves its HTML page.

    Not a link to the file: a browser refuses file:// links from the UI's http:// page, and a
    server would have to be running when the link is clicked.
    """
    return {
        "report": dg.MetadataValue.md(report_markdown(report.subtitle, report.sections)),
        "report_page": dg.MetadataValue.text(
            f"{SERVE_COMMAND}  (serves {report.path.name} on a local http:// address it prints)"
        ),
    }


def report_markdown(subtitle: str, sections: Sequence[Section]) -> str:
    """The report as markdown for the UI: every section but the per-iteration loss curves
    (each iteration's proxy_scores shows its own)."""
    from climb_assets.core.shared.report_markdown import render_markdown
    from climb_assets.defs.report import LOSS_SECTION, REPORT_TITLE

    kept = [s for s in sections if s.title != LOSS_SECTION]
    note = f"Loss curves: on each proxy_scores partition, and on the page of `{SERVE_COMMAND}`."
    return render_markdown(REPORT_TITLE, subtitle, kept, note)


def plot(png: bytes, alt: str) -> dg.MetadataValue:
    from climb_assets.core.shared.plots import png_markdown

    return dg.MetadataValue.md(png_markdown(png, alt))


def counts(mapping: Mapping[str, int]) -> dg.MetadataValue:
    return dg.MetadataValue.json({str(k): int(v) for k, v in sorted(mapping.items())})


def super_cluster_names_of(supers: pl.DataFrame | Path) -> dict[int, str]:
    """Super-cluster id -> '3: lord, god, thee', from super_clusters.parquet or its frame."""
    from climb_assets.core.clustering.naming import super_cluster_names

    frame = pl.read_parquet(supers) if isinstance(supers, Path) else supers
    frame = frame.sort("super_cluster")
    return super_cluster_names(
        zip(frame["super_cluster"], frame["top_terms"].to_list(), strict=True)
    )


def named(
    frame: pl.DataFrame, names: Mapping[int, str], column: str = "super_cluster"
) -> pl.DataFrame:
    """`frame` with its super-cluster id column replaced, in place, by a `name` column."""
    labels = [names.get(int(i), str(i)) for i in frame[column]]
    return frame.with_columns(pl.Series(column, labels)).rename({column: "name"})


def fine_cluster_label(cluster: int, super_cluster: int | None) -> str:
    """A fine (K-means) cluster as users read it: 'cluster 12 (in super-cluster 3)'."""
    where = "pruned" if super_cluster is None else f"in super-cluster {super_cluster}"
    return f"cluster {cluster} ({where})"


def super_cluster_examples(
    summary: pl.DataFrame, mapping: pl.DataFrame, names: Mapping[int, str], chars: int = 160
) -> dg.MetadataValue:
    """Per super-cluster: its fine clusters, full top terms and example documents (snippets of
    the documents closest to its clusters' centroids), as a markdown table."""
    members = (
        mapping.filter(pl.col("super_cluster").is_not_null())
        .group_by("super_cluster")
        .agg(pl.col("cluster").sort())
    )
    clusters = dict(zip(members["super_cluster"], members["cluster"].to_list(), strict=True))
    lines = [
        "| super-cluster | fine clusters | top terms | example documents |",
        "|---|---|---|---|",
    ]
    for row in summary.sort("super_cluster").iter_rows(named=True):
        i = int(row["super_cluster"])
        examples = " ".join(  # the UI drops raw HTML such as <br>: bold numbers part them
            f"**({n})** " + _md_text(_cut(" ".join(str(t).split()), chars))
            for n, t in enumerate(row["examples"] or [], start=1)
        )
        cells = [
            _md_text(names.get(i, str(i))),
            ", ".join(str(c) for c in clusters.get(i, [])),
            _md_text(", ".join(row["top_terms"] or [])),
            examples or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def _md_text(text: str) -> str:
    """Plain text safe in a markdown table cell: no table breaks, no markup, no raw HTML."""
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    text = re.sub(r"([`*_\[\]<>#])", r"\\\1", text)
    return text


def per_iteration(values: Mapping[str, float | None], what: str) -> dg.MetadataValue:
    """{'iter-001': 0.5, ...} as a two-column markdown table, 'n/a' where missing."""
    rows = [f"| {key} | {_cell(value)} |" for key, value in sorted(values.items())]
    return dg.MetadataValue.md("\n".join([f"| iteration | {what} |", "|---|---|", *rows]))


def iteration_numbers(
    iteration: int, scores: pl.Series, earlier: pl.DataFrame | None
) -> dict[str, dg.MetadataValue]:
    """One number per search-iteration partition for the Plots view's Partitions mode, which
    draws each numeric entry as a line across partitions: the round's best and mean proxy
    objective and the best of all rounds so far."""
    best = float(scores.max())
    before = None if earlier is None or earlier.height == 0 else float(earlier["score"].max())
    so_far = best if before is None else max(best, before)
    return {
        "iteration": dg.MetadataValue.int(iteration),
        "mean_objective": dg.MetadataValue.float(_readable(float(scores.mean()))),
        "best_objective_so_far": dg.MetadataValue.float(_readable(so_far)),
    }


def _readable(value: float) -> float:
    rounded = round_for_reading(value)
    return math.nan if rounded is None else rounded


def or_na(value: float | None) -> float | str:
    """`rounded`, or "n/a" for None (a value not computed)."""
    return "n/a" if value is None else rounded(value)


def rounded(value: float) -> float:
    """Rounded for reading; a float still, so the Plots tab charts it across materializations."""
    rounded = round_for_reading(float(value))
    return float("nan") if rounded is None else rounded
