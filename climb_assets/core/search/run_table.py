"""A table of past training runs as the predictor reads it: one row per run, weight columns (the
run's data mixture) and score columns folded into one objective. The runs come from one CSV/TSV
or Parquet table, or from a weights file and a scores file joined on a run id column.

`climb predictor` reads its input here; errors are `RunTableError`s (plain ValueErrors) whose
one-line message names the file, the row, the column and the command-line option to change.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from climb_assets.core.search.mixtures import validate_mixture_table
from climb_assets.core.shared.atomic import atomic_path, write_parquet

if TYPE_CHECKING:
    from climb_assets.core.search.predictor import Predictor

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
DEFAULT_WEIGHTS = "w_*"  # the weight columns `climb` writes
DEFAULT_SCORE = "score"
DEFAULT_TOLERANCE = 1e-3
# Columns named in an error about a column that is not there: a table may have dozens.
MAX_LISTED_COLUMNS = 6
# difflib similarity of a suggested column: 0.6 (its default) offers 'mix_books' for 'mix_cod'.
NEAR_MATCH = 0.7


class RunTableError(ValueError):
    """A problem with the runs' files or the options naming their columns."""


@dataclass(frozen=True)
class RunTableSource:
    """Where the runs are and which columns to read; the fields are the command line's
    options (`--weights`, `--weights-file`, `--score`, ...), named in the errors."""

    table: Path | None = None
    weights: str | None = None  # comma-separated names/globs (or, deprecated, a weights file)
    weight_columns: str | None = None  # the same as `weights`
    weights_file: Path | None = None
    scores: Path | None = None
    key: str | None = None
    score: list[str] | None = None  # score columns; None: [DEFAULT_SCORE]
    score_weight: list[float] | None = None  # one per score column; None: 1 each
    tolerance: float = DEFAULT_TOLERANCE
    renormalize: bool = False


@dataclass
class RunTable:
    """The parsed runs: weights (n, k), objective (n,), and the names they came from."""

    source: str  # the table, or "WEIGHTS + SCORES" for two joined files
    weight_columns: list[str]
    weights: np.ndarray
    score_columns: list[str]
    score_weights: list[float]
    objective: np.ndarray
    keys: list[str] | None = None  # run ids of the key column, in row order

    def require_rows(self, needed: int, action: str) -> None:
        """RunTableError unless the table has at least `needed` runs for `action`."""
        if len(self.objective) < needed:
            raise RunTableError(
                f"{self.source} has {len(self.objective)} row(s); `{action}` needs at least "
                f"{needed}"
            )


def read_table(path: Path) -> pl.DataFrame:
    """A CSV/TSV or Parquet file as a DataFrame, chosen by extension."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in TABLE_SUFFIXES:
            return pl.read_csv(path, separator=TABLE_SUFFIXES[suffix], infer_schema_length=None)
        if suffix in PARQUET_SUFFIXES:
            return pl.read_parquet(path)
    except pl.exceptions.PolarsError as err:
        raise RunTableError(f"{path}: not a readable table: {_reason(err)}") from None
    raise RunTableError(f"{path}: unknown table type {suffix!r}; use .csv, .tsv or .parquet")


def write_table(df: pl.DataFrame, path: Path) -> None:
    """Write CSV/TSV or Parquet by extension, atomically."""
    suffix = Path(path).suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        write_parquet(df, path)
    elif suffix in TABLE_SUFFIXES:
        with atomic_path(path) as tmp:
            df.write_csv(tmp, separator=TABLE_SUFFIXES[suffix])
    else:
        raise RunTableError(f"--out {path}: unknown table type {suffix!r}; use .csv or .parquet")


def is_table_file(value: str | Path | None) -> bool:
    """True when `value` ends like a table file name (.csv, .tsv, .parquet, .pq)."""
    return value is not None and Path(value).suffix.lower() in {
        *TABLE_SUFFIXES,
        *PARQUET_SUFFIXES,
    }


def _reason(err: Exception) -> str:
    """Polars' cause in one line (its CSV errors wrap it in several lines of advice)."""
    text = str(err)
    if "Original error: ```" in text:
        text = text.split("Original error: ```", 1)[1].split("```", 1)[0]
    return " ".join(text.split())[:200]


def resolve_weight_columns(spec: str, available: list[str], option: str = "--weights") -> list[str]:
    """Column names from comma-separated names/globs, in table order for globs, no repeats."""
    chosen: list[str] = []
    for token in (part.strip() for part in spec.split(",")):
        if not token:
            continue
        is_glob = any(char in token for char in "*?[")
        if is_glob:
            matches = fnmatch.filter(available, token)
        else:
            matches = [token] if token in available else []
        if not matches and is_glob:
            raise RunTableError(
                f"{option} {token!r} matches no column; {_near_or_listed(token, available)}"
            )
        if not matches:
            raise RunTableError(f"{option}: {no_column(token, available)}")
        chosen.extend(name for name in matches if name not in chosen)
    if len(chosen) < 2:
        raise RunTableError(f"{option} selects {chosen}: a mixture needs at least 2 columns")
    return chosen


def no_column(name: str, available: list[str]) -> str:
    """ "no column 'losss'; did you mean 'loss'?", or a few of the columns there are."""
    return f"no column {name!r}; {_near_or_listed(name, available)}"


def _near_or_listed(name: str, available: list[str]) -> str:
    """ "did you mean 'loss'?" for near matches, else the first few columns."""
    close = difflib.get_close_matches(name, available, n=3, cutoff=NEAR_MATCH)
    if close:
        return f"did you mean {' or '.join(map(repr, close))}?"
    shown = ", ".join(map(repr, available[:MAX_LISTED_COLUMNS]))
    more = len(available) - MAX_LISTED_COLUMNS
    return f"the columns are {shown}" + (f" and {more} more" if more > 0 else "")


def _unread(line: str) -> None:
    """Where notes go when the caller does not ask for them."""


def load_run_table(source: RunTableSource, note: Callable[[str], None] = _unread) -> RunTable:
    """Read the runs of `source` into validated weights and one objective per row; `note`
    receives what the user should know but is no error (a deprecated form, runs left out)."""
    score_columns, score_weights = _scores(source)
    if source.table is None and source.weights_file is None and is_table_file(source.weights):
        note(f"--weights {source.weights} as a file is deprecated; use --weights-file")
        source = replace(source, weights_file=Path(str(source.weights)), weights=None)
    if source.weights is not None and source.weight_columns is not None:
        raise RunTableError("--weights and --weight-columns both name columns: give one")
    if source.table is None:
        return _load_joined(source, score_columns, score_weights, note)
    if source.weights_file is not None or source.scores is not None or source.key is not None:
        raise RunTableError(
            "give either TABLE or --weights-file FILE --scores FILE --key COL, not both"
        )
    if is_table_file(source.weights):
        raise RunTableError(
            f"--weights {source.weights} is a file, but --weights names columns; for two files "
            "drop TABLE and give --weights-file FILE --scores FILE --key COL"
        )
    df = read_table(source.table)
    option, spec = _weight_spec(source)
    columns = resolve_weight_columns(spec or DEFAULT_WEIGHTS, df.columns, option)
    weights = validated_weights(df, columns, source.tolerance, source.table, source.renormalize)
    objective = weighted_objective(df, score_columns, score_weights, source.table)
    return RunTable(str(source.table), columns, weights, score_columns, score_weights, objective)


def _scores(source: RunTableSource) -> tuple[list[str], list[float]]:
    """(score columns, their weights in the objective), one weight per column."""
    columns = source.score or [DEFAULT_SCORE]
    if source.score_weight is None:
        return columns, [1.0] * len(columns)
    if len(source.score_weight) != len(columns):
        raise RunTableError(
            f"{len(source.score_weight)} --score-weight for {len(columns)} --score: give one "
            "per score"
        )
    return columns, list(source.score_weight)


def _weight_spec(source: RunTableSource) -> tuple[str, str | None]:
    """(option named in errors, its comma-separated names/globs or None)."""
    if source.weight_columns is not None:
        return "--weight-columns", source.weight_columns
    return "--weights", source.weights


def _two_file_problem(source: RunTableSource) -> str | None:
    """What two-file mode still lacks, in words; None when nothing."""
    given = [source.weights_file is not None, source.scores is not None, source.key is not None]
    if not any(given):
        return "give TABLE (a CSV/Parquet of runs), or --weights-file FILE --scores FILE --key COL"
    lacking = [
        f"{option} {meta}"
        for option, meta, present in zip(
            ("--weights-file", "--scores", "--key"), ("FILE", "FILE", "COL"), given, strict=True
        )
        if not present
    ]
    if not lacking:
        return None
    why = " (the run id column both files share)" if not given[2] else ""
    return f"two files (no TABLE) also need {' and '.join(lacking)}{why}"


def _load_joined(
    source: RunTableSource,
    score_columns: list[str],
    score_weights: list[float],
    note: Callable[[str], None],
) -> RunTable:
    """Weights from one file, scores from another, inner-joined on the key column."""
    problem = _two_file_problem(source)
    if problem is not None:
        raise RunTableError(problem)
    weights_path, scores_path, key = source.weights_file, source.scores, source.key
    assert weights_path is not None and scores_path is not None and key is not None  # see above
    weights_df, scores_df = read_table(weights_path), read_table(scores_path)
    for path, df in ((weights_path, weights_df), (scores_path, scores_df)):
        _check_key(df, key, path)
    others = [name for name in weights_df.columns if name != key]
    option, spec = _weight_spec(source)
    columns = (
        resolve_weight_columns(spec, others, option)
        if spec
        else resolve_weight_columns(",".join(others), others, f"{weights_path}'s columns")
    )
    weights = validated_weights(
        weights_df, columns, source.tolerance, weights_path, source.renormalize
    )
    objective = weighted_objective(scores_df, score_columns, score_weights, scores_path)
    left = pl.DataFrame({key: _key_strings(weights_df[key]), "_w": np.arange(len(weights))})
    right = pl.DataFrame({key: _key_strings(scores_df[key]), "_s": np.arange(len(objective))})
    joined = left.join(right, on=key, how="inner", maintain_order="left")
    if joined.height == 0:
        raise RunTableError(
            f"no {key!r} value is in both {weights_path} and {scores_path}: nothing to join"
        )
    unmatched = (left.height - joined.height, right.height - joined.height)
    if any(unmatched):
        note(
            f"{unmatched[0]} run(s) of {weights_path} have no score and {unmatched[1]} of "
            f"{scores_path} no weights; they are left out"
        )
    return RunTable(
        f"{weights_path} + {scores_path}",
        columns,
        weights[joined["_w"].to_numpy()],
        score_columns,
        score_weights,
        objective[joined["_s"].to_numpy()],
        keys=joined[key].to_list(),
    )


def _check_key(df: pl.DataFrame, key: str, path: Path) -> None:
    if key not in df.columns:
        raise RunTableError(f"{path}: --key: {no_column(key, df.columns)}")
    if df[key].null_count():
        raise RunTableError(f"{path}: --key column {key!r} has empty values")
    duplicated = df.filter(pl.col(key).is_duplicated())[key]
    if len(duplicated):
        raise RunTableError(
            f"{path}: --key {key!r} value {duplicated[0]!r} appears more than once; run ids "
            "must be unique"
        )


def _key_strings(column: pl.Series) -> pl.Series:
    """Keys compared as text, so 7 in one file matches "7" in the other."""
    return column.cast(pl.Utf8)


def validated_weights(
    df: pl.DataFrame, columns: list[str], tolerance: float, path: Path, renormalize: bool
) -> np.ndarray:
    """The (n, k) weights of `columns`, each row summing to 1: checked within `tolerance`, or
    divided by its sum when `renormalize`."""
    missing = [name for name in columns if name not in df.columns]
    if missing:
        raise RunTableError(f"{path}: missing weight column(s) {missing}")
    try:  # cells first (numeric, finite, non-negative); the sums are checked below
        weights = validate_mixture_table(df, columns, atol=np.inf)
    except ValueError as err:
        raise RunTableError(f"{path}: {err}") from err
    totals = weights.sum(axis=1)
    if renormalize:
        empty = np.flatnonzero(totals <= 0)
        if empty.size:
            raise RunTableError(
                f"{path}: row {empty[0] + 1}: weights {columns} are all 0, nothing to "
                f"renormalize; {empty.size} row(s) affected"
            )
    else:
        bad = np.flatnonzero(np.abs(totals - 1) > tolerance)
        if bad.size:
            raise RunTableError(
                f"{path}: row {bad[0] + 1}: weights {columns} sum to {totals[bad[0]]:.8g}, not 1 "
                f"(--tolerance {tolerance:g}); {bad.size} row(s) affected. Pass --renormalize to "
                "divide each row by its sum (percentages, rows summing to 100 or 0.98), or "
                "raise --tolerance"
            )
    return weights / totals[:, None]


def weighted_objective(
    df: pl.DataFrame, columns: list[str], weights: list[float], path: Path
) -> np.ndarray:
    """Sum over `columns` of weight x score per row; every score numeric and finite."""
    for name in columns:
        if name not in df.columns:
            raise RunTableError(f"{path}: --score: {no_column(name, df.columns)}")
    total = np.zeros(df.height)
    for name, weight in zip(columns, weights, strict=True):
        if not df.schema[name].is_numeric():
            raise RunTableError(f"{path}: score column {name!r} is {df.schema[name]}, not numeric")
        values = df[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise RunTableError(
                f"{path}: row {bad[0] + 1}, column {name!r}: score is missing or not finite "
                f"({bad.size} row(s) affected); drop or fix those runs"
            )
        total += weight * values
    return total


def reading_info(table: RunTable, source: RunTableSource) -> dict[str, Any]:
    """What a predictor fitted on `table` records of it: `score_mixtures` reads new mixtures
    with the same tolerance and renormalization."""
    return {
        "source_table": table.source,
        "score_columns": table.score_columns,
        "score_weights": table.score_weights,
        "tolerance": source.tolerance,
        "renormalize": source.renormalize,
    }


def score_mixtures(
    predictor: Predictor,
    path: Path,
    model_dir: Path,
    tolerance: float | None = None,
    renormalize: bool | None = None,
) -> pl.DataFrame:
    """The mixtures table at `path` with 'predicted' and 'predicted_spread' columns and its
    weights as scored (summing to 1); `tolerance` and `renormalize` default to those at fit."""
    df = read_table(path)
    columns = predictor.weight_columns
    missing = [name for name in columns if name not in df.columns]
    if missing:
        raise RunTableError(
            f"{path}: missing weight column(s) {missing}; the model in {model_dir} scores "
            f"mixtures of {columns}"
        )
    if tolerance is None:
        tolerance = float(predictor.info.get("tolerance", DEFAULT_TOLERANCE))
    if renormalize is None:
        renormalize = bool(predictor.info.get("renormalize", False))
    weights = validated_weights(df, columns, tolerance, path, renormalize)
    return df.with_columns(
        *(pl.Series(name, weights[:, j]) for j, name in enumerate(columns)),
        pl.Series("predicted", predictor.predict(weights)),
        pl.Series("predicted_spread", predictor.predict_spread(weights)),
    )
