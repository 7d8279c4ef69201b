"""Small PNG charts for asset metadata (Dagster shows them through markdown data URIs).

Figures are drawn on matplotlib's Agg canvas directly, without pyplot's global state, so plotting
is safe in any thread and never opens a window. Figures are small (6x4 in at 80 dpi) to keep the
metadata stored per materialization small.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from matplotlib.axes import Axes

FIGSIZE = (6.0, 4.0)
DPI = 80
MAX_LEGEND_ENTRIES = 20


@contextmanager
def _axes(title: str, png: list[bytes]) -> Iterator[Axes]:
    """Yield fresh axes; on exit render the figure as PNG bytes into `png`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.set_title(title)
    yield ax
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    png.append(buffer.getvalue())


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    ylabel: str = "",
    errors: Sequence[float] | None = None,
) -> bytes:
    """Vertical bars, one per label (labels rotated when there are many), with symmetric error
    bars of `errors` when given (NaN errors draw no bar)."""
    if errors is not None and len(errors) != len(values):
        raise ValueError(f"bar_chart: {len(errors)} errors for {len(values)} values")
    png: list[bytes] = []
    with _axes(title, png) as ax:
        positions = np.arange(len(labels))
        yerr = None if errors is None else np.nan_to_num(np.asarray(errors, dtype=float))
        ax.bar(positions, values, color="tab:blue", yerr=yerr, capsize=0 if errors is None else 4)
        texts = [str(label) for label in labels]
        angle = _rotation(texts)
        ax.set_xticks(positions, texts, rotation=angle, ha="right" if angle == 30 else "center")
        ax.set_ylabel(ylabel)
    return png[0]


def _rotation(labels: Sequence[str]) -> int:
    """Tick-label angle: upright when few short labels fit side by side, else slanted."""
    if len(labels) > 12:
        return 90
    return 30 if max((len(label) for label in labels), default=0) * len(labels) > 60 else 0


def margin_chart(
    labels: Sequence[str],
    margins: Sequence[float],
    errors: Sequence[float] | None,
    title: str,
    xlabel: str = "margin",
) -> bytes:
    """Horizontal bars of differences from a reference at 0 (e.g. the optimal's margin over each
    baseline), with error bars: the axis spans the margins, not 0 to the raw values, so small
    differences show; labels sit on the y axis, one per line, so they never overlap. Bars are
    green where the margin exceeds its error, grey otherwise (NaN errors count as not exceeding).
    """
    values = np.asarray(margins, dtype=float)
    if errors is not None and len(errors) != len(values):
        raise ValueError(f"margin_chart: {len(errors)} errors for {len(values)} margins")
    spread = np.zeros_like(values) if errors is None else np.asarray(errors, dtype=float)
    beyond = np.nan_to_num(values - np.nan_to_num(spread, nan=np.inf), nan=-np.inf) > 0
    png: list[bytes] = []
    with _axes(title, png) as ax:
        positions = np.arange(len(values))[::-1]  # the first label on top
        ax.barh(
            positions,
            np.nan_to_num(values),
            xerr=None if errors is None else np.nan_to_num(spread),
            color=["tab:green" if b else "tab:grey" for b in beyond],
            capsize=4,
        )
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(positions, [wrap_label(str(label)) for label in labels])
        ax.set_xlabel(xlabel)
    return png[0]


def wrap_label(label: str, width: int = 18) -> str:
    """A tick label broken into lines of at most about `width` characters, at spaces."""
    import textwrap

    return (
        "\n".join(textwrap.wrap(label, width, break_long_words=False, break_on_hyphens=False))
        or label
    )


def histogram(
    values: Sequence[float] | np.ndarray, bins: int, title: str, xlabel: str = ""
) -> bytes:
    """Histogram of `values` (non-finite values dropped)."""
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    span = None
    if data.size and np.ptp(data) <= 1e-9 * max(1.0, float(np.abs(data).max())):
        # Equal values up to rounding (0.9 and 0.9000000000000001): numpy cannot cut so
        # narrow a range into bins, so draw them in one bar of a unit-wide range.
        span = (float(data.min()) - 0.5, float(data.max()) + 0.5)
    png: list[bytes] = []
    with _axes(title, png) as ax:
        ax.hist(data, bins=bins, range=span, color="tab:blue")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
    return png[0]


def scatter_2d(
    xy: np.ndarray,
    labels: Sequence[object] | np.ndarray,
    title: str,
    sizes: Sequence[float] | None = None,
    none_label: str = "None",
    legend_title: str = "",
) -> bytes:
    """2-D points coloured by label (e.g. centroids by super-cluster); `None` labels are grey
    and named `none_label` in the legend."""
    points = np.asarray(xy, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(labels):
        raise ValueError(
            f"scatter_2d: need (n, 2) points and n labels, got {points.shape}, {len(labels)}"
        )
    png: list[bytes] = []
    with _axes(title, png) as ax:
        keys = [none_label if label is None else str(label) for label in labels]
        distinct = sorted(set(keys), key=_natural_key)
        colors = _colors(len(distinct))
        for color, key in zip(colors, distinct, strict=True):
            mask = np.array([k == key for k in keys])
            size = None if sizes is None else np.asarray(sizes, dtype=np.float64)[mask]
            color_used = "lightgrey" if key == none_label else color
            ax.scatter(points[mask, 0], points[mask, 1], s=size, color=color_used, label=key)
        if len(distinct) <= MAX_LEGEND_ENTRIES:
            ax.legend(fontsize="x-small", ncols=2, loc="best", title=legend_title or None)
    return png[0]


def _natural_key(label: str) -> tuple[int, float, str]:
    """Numeric labels sort by value and before text labels."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def line_chart(
    xs: Sequence[float] | Mapping[str, Sequence[float]],
    series: Mapping[str, Sequence[float]],
    title: str,
    xlabel: str = "",
) -> bytes:
    """One line per named series over the shared x values, or over its own (`xs` by name)."""
    png: list[bytes] = []
    with _axes(title, png) as ax:
        for name, ys in series.items():
            own = xs[name] if isinstance(xs, Mapping) else xs
            if len(ys) != len(own):
                raise ValueError(
                    f"line_chart: series {name!r} has {len(ys)} values for {len(own)} x"
                )
            ax.plot(own, ys, marker="o", markersize=3, label=name)
        ax.set_xlabel(xlabel)
        if series:
            ax.legend(fontsize="small")
    return png[0]


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project rows of `x` on their first two principal components (numpy SVD), shape (n, 2).

    Component signs are fixed (largest loading positive) so the picture is stable across runs.
    """
    data = np.asarray(x, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"pca_2d: expected a 2-D array, got shape {data.shape}")
    centered = data - data.mean(axis=0) if len(data) else data
    if len(data) < 2:
        return np.zeros((len(data), 2))
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    projected = centered @ (components * signs[:, None]).T
    if projected.shape[1] < 2:  # one feature: pad the missing axis
        projected = np.hstack([projected, np.zeros((len(projected), 1))])
    return projected


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown embedding `png` as a base64 data URI (for MetadataValue.md)."""
    encoded = base64.b64encode(png).decode("ascii")
    alt = alt.replace("[", "(").replace("]", ")")  # brackets would end the alt text early
    return f"![{alt}](data:image/png;base64,{encoded})"


def objective_by_iteration(runs: pl.DataFrame) -> bytes:
    """Best and mean objective of the proxy runs (`iteration`, `score` columns) per iteration."""
    per_iteration = (
        runs.group_by("iteration")
        .agg(pl.col("score").max().alias("best"), pl.col("score").mean().alias("mean"))
        .sort("iteration")
    )
    return line_chart(
        per_iteration["iteration"].to_list(),
        {"best": per_iteration["best"].to_list(), "mean": per_iteration["mean"].to_list()},
        "objective (higher is better) by iteration",
        "iteration",
    )


def loss_curves(curves: pl.DataFrame, iteration: str) -> bytes | None:
    """Each candidate's training loss over tokens (`candidate_id`, `tokens`, `loss` columns; a
    candidate stopped at its rung has a shorter curve); None when there are no curves."""
    by_candidate = curves.partition_by("candidate_id", as_dict=True, maintain_order=True)
    if not by_candidate:
        return None
    return line_chart(
        {f"candidate {k[0]}": f["tokens"].to_list() for k, f in by_candidate.items()},
        {f"candidate {k[0]}": f["loss"].to_list() for k, f in by_candidate.items()},
        f"proxy training loss, {iteration}",
        "tokens",
    )


def evaluation_margins(margins: Sequence[Mapping], seeds: int) -> bytes | None:
    """The optimal's margin over each baseline (`baseline`, `margin`, `spread`,
    `same_as_optimal` keys, as in the evaluation's summary) with the larger seed std as error
    bar: green where the margin exceeds it (beaten). None without baselines."""
    if not margins:
        return None
    labels = [
        m["baseline"] + (" (same as optimal)" if m.get("same_as_optimal") else "") for m in margins
    ]
    return margin_chart(
        labels,
        [np.nan if m["margin"] is None else m["margin"] for m in margins],
        [np.nan if m.get("spread") is None else m["spread"] for m in margins],
        f"optimal minus each baseline, mean of {seeds} seed(s)\n"
        "> 0: optimal better; error bar: larger seed std",
        "margin of the optimal (objective, higher is better)",
    )
