"""Small helpers that turn tables and plots into metadata a person can read in the UI."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from climb_assets.core.clustering.naming import round_for_reading
from climb_assets.store import Layout

_WEIGHT_COLUMN = re.compile(r"^w_(\d+)$")


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
        return round_for_reading(value)
    if isinstance(value, list | tuple):
        return ", ".join(str(_record_value(v)) for v in value)
    if value is None or isinstance(value, int | bool):
        return value
    text = str(value).replace("\n", " ")
    return text if len(text) <= 120 else text[:117] + "..."


def table(df: pl.DataFrame, max_rows: int = 50) -> dg.MetadataValue:
    """A polars frame as a table the asset page shows inline: floats rounded for reading, lists
    joined, long texts cut (first `max_rows` rows)."""
    shown = df.head(max_rows)
    records = [
        dg.TableRecord({k: _record_value(v) for k, v in row.items()})
        for row in shown.iter_rows(named=True)
    ]
    types = {name: pl.Utf8 if dtype.is_nested() else dtype for name, dtype in shown.schema.items()}
    return dg.MetadataValue.table(records, schema=column_schema(types))


def table_metadata(df: pl.DataFrame, path: Path | None = None) -> dict[str, Any]:
    """Dagster's standard keys for a table asset: row count and column schema."""
    schema = parquet_schema(path) if path is not None and path.exists() else column_schema(df)
    return {"dagster/row_count": df.height, "dagster/column_schema": schema}


def weight_name(column: str, names: Mapping[int, str]) -> str:
    """A weight column `w_<i>` as its super-cluster's name (`3: bible, lord, god`)."""
    match = _WEIGHT_COLUMN.match(column)
    return names.get(int(match.group(1)), column) if match else column


def with_names(df: pl.DataFrame, names: Mapping[int, str]) -> pl.DataFrame:
    """Weight columns `w_<i>` renamed to super-cluster names."""
    return df.rename({c: weight_name(c, names) for c in df.columns})


def report_link(layout: Layout) -> dict[str, dg.MetadataValue]:
    """Write the HTML report of the latest search and link it (the UI cannot show all of it)."""
    from climb_assets.report import write_report

    path = write_report(layout).resolve()
    return {"report": dg.MetadataValue.url(path.as_uri())}


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
