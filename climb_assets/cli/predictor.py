"""`climb predictor`: the mixture -> score predictor on any table of past training runs.

Usable without Dagster or the rest of the pipeline: `python -m climb_assets.cli.predictor
predictor ACTION ...` works too.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from climb_assets.core.shared.atomic import atomic_path, write_parquet

if TYPE_CHECKING:
    from climb_assets.core.search.mixtures import MixtureConstraints
    from climb_assets.settings import PredictorSettings

DESCRIPTION = """\
Fit, cross-validate and use CLIMB's LightGBM predictor on a table of past runs.

TABLE is a CSV (.csv, .tsv) or Parquet (.parquet, .pq) file with one row per training run:
weight columns (the run's data mixture, non-negative, summing to 1 per row) and one or more
score columns. Rows whose weights sum to within --tolerance of 1 are renormalized exactly;
--renormalize divides every row by its sum instead (percentages, rows summing to 0.98, ...).

Two files instead of TABLE: --weights-file FILE --scores FILE --key COL joins them on COL
(runs present in only one file are left out, with a note). The weight columns of the weights
file are every column but the key unless --weights says otherwise.

Weight columns: --weights (or its synonym --weight-columns) takes comma-separated names and/or
glob patterns (default 'w_*', the columns written by `climb`); matches keep the table's column
order. They are never guessed from the data: a table without w_* columns needs --weights.

Objective: --score COL (default 'score'); give --score several times for a weighted sum, with
one --score-weight per --score (default 1 each). Use a negative weight to fold a lower-is-better
score into a higher-is-better objective. fit and propose need the direction: --maximize or
--minimize.

The predictor is a bagged ensemble of --ensemble-size LightGBM models over a smooth base (a
ridge regression on each weight and its square, chosen by leave-one-out error; the trees fit
its residuals; --no-smooth-base turns it off); the rounds are chosen by cross-validation
unless --rounds fixes them.

actions:
  cv       out-of-fold Spearman correlation of the predictor (k-fold; leave-one-out when rows
           are fewer than --folds)
  fit      fit on every row and save the model files + predictor.json into --out DIR
  predict  score the mixtures of --mixtures FILE with a saved --model DIR (--tolerance and
           --renormalize default to those used at fit)
  propose  best mixture: the mean of the --top-k predicted (within --region-radius of the best
           one) of a --pool-size pool of Dirichlet draws around the table's mixtures plus the
           table's own mixtures, taken only inside the trust region of the runs
           (--trust-radius), weights under --min-weight zeroed unless the predictor scores the
           mixture higher with them (as the search does); never predicted worse than the best
           observed run
"""

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
# `fit --out` names a directory; these suffixes mean the user expected a single file.
FILE_SUFFIXES = {*TABLE_SUFFIXES, *PARQUET_SUFFIXES, ".json", ".txt", ".pkl", ".pickle"}
FILE_SUFFIXES |= {".joblib", ".lgb", ".model", ".bin"}
DEFAULT_WEIGHTS = "w_*"
DEFAULT_SCORE = "score"
DEFAULT_TOLERANCE = 1e-3
# The search's defaults (search.final_region_radius, search.final_min_weight,
# search.final_trust_radius).
DEFAULT_REGION_RADIUS = 0.3
DEFAULT_MIN_WEIGHT = 0.01
DEFAULT_TRUST_RADIUS = 2.0
# Columns named in an error about a column that is not there: a table may have dozens.
MAX_LISTED_COLUMNS = 6
# difflib similarity of a suggested column: 0.6 (its default) offers 'mix_books' for 'mix_cod'.
NEAR_MATCH = 0.7


class PredictorCliError(ValueError):
    """A problem with the user's input, reported without a traceback."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `predictor` on an argparse subparsers object; dispatch with `args.handler(args)`."""
    parser = subparsers.add_parser(
        "predictor",
        help="fit / cross-validate / apply the mixture predictor on a table of past runs",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="predictor_action", required=True, metavar="ACTION")
    table = _table_options()
    cv = actions.add_parser("cv", parents=[table], help="cross-validated Spearman correlation")
    cv.add_argument("--folds", type=int, default=5, help="folds, at least 2 (default 5)")
    _add_output_format(cv)
    fit = actions.add_parser("fit", parents=[table], help="fit on all rows and save the model")
    fit.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="model directory (not a file)"
    )
    propose = actions.add_parser("propose", parents=[table], help="best mixture by prediction")
    propose.add_argument("--top-k", type=int, default=16, help="mixtures averaged (default 16)")
    propose.add_argument(
        "--pool-size", type=int, default=20_000, help="mixtures scored (default 20000)"
    )
    propose.add_argument(
        "--region-radius",
        type=float,
        default=DEFAULT_REGION_RADIUS,
        help="average only top-k mixtures within this total-variation distance of the best "
        f"predicted one (default {DEFAULT_REGION_RADIUS})",
    )
    propose.add_argument(
        "--min-weight",
        type=float,
        default=DEFAULT_MIN_WEIGHT,
        help="zero the proposal's weights below this and re-normalize, unless the predictor "
        "scores the mixture higher with them (as the search does; the output says when they "
        f"are kept); 0 keeps every sliver the average leaves (default {DEFAULT_MIN_WEIGHT})",
    )
    propose.add_argument(
        "--trust-radius",
        type=float,
        default=DEFAULT_TRUST_RADIUS,
        metavar="MULT",
        help="choose only mixtures within MULT x the runs' median nearest-neighbour "
        "total-variation distance of some run, each weight within the runs' range +- half "
        f"that; 0 turns the trust region off (default {DEFAULT_TRUST_RADIUS})",
    )
    propose.add_argument(
        "--allow-outside",
        action="store_true",
        help="choose among every candidate; only report a choice outside the trust region",
    )
    _add_output_format(propose)
    _add_predict_parser(actions)
    parser.set_defaults(handler=run)
    return parser


def _table_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "table",
        type=Path,
        nargs="?",
        metavar="TABLE",
        help="CSV or Parquet of past runs (or give --weights-file FILE --scores FILE --key COL)",
    )
    common.add_argument(
        "--weights",
        metavar="SPEC",
        help="weight columns of TABLE or of --weights-file: comma-separated names or globs "
        "(default 'w_*'; for --weights-file every column but --key)",
    )
    common.add_argument("--weight-columns", metavar="SPEC", help="the same as --weights")
    common.add_argument(
        "--weights-file",
        type=Path,
        metavar="FILE",
        help="CSV/Parquet of weights, joined to --scores on --key (instead of TABLE)",
    )
    common.add_argument(
        "--scores", type=Path, metavar="FILE", help="CSV/Parquet of scores, joined on --key"
    )
    common.add_argument("--key", metavar="COL", help="run id column shared by the two files")
    common.add_argument(
        "--score",
        action="append",
        metavar="COL",
        help="score column; repeat for a weighted objective (default 'score')",
    )
    common.add_argument(
        "--score-weight",
        action="append",
        type=float,
        metavar="W",
        help="weight of the matching --score (default 1)",
    )
    direction = common.add_mutually_exclusive_group()
    direction.add_argument(
        "--maximize", dest="maximize", action="store_true", default=None, help="higher is better"
    )
    direction.add_argument(
        "--minimize", dest="maximize", action="store_false", default=None, help="lower is better"
    )
    common.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_model_options(common)
    _add_tolerance(common)
    return common


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    from climb_assets.settings import PredictorSettings

    defaults = PredictorSettings()
    group = parser.add_argument_group("predictor (PredictorSettings)")
    group.add_argument(
        "--rounds",
        type=int,
        default=defaults.rounds,
        help="boosting rounds per model (default: chosen by cross-validation)",
    )
    group.add_argument(
        "--max-rounds",
        type=int,
        default=defaults.max_rounds,
        help=f"cap on cross-validated rounds (default {defaults.max_rounds})",
    )
    group.add_argument(
        "--learning-rate",
        type=float,
        default=defaults.learning_rate,
        help=f"LightGBM learning rate (default {defaults.learning_rate})",
    )
    group.add_argument(
        "--num-leaves",
        type=int,
        default=defaults.num_leaves,
        help=f"leaves per tree (default {defaults.num_leaves})",
    )
    group.add_argument(
        "--ensemble-size",
        type=int,
        default=defaults.ensemble_size,
        help=f"models bagged on bootstrap resamples (default {defaults.ensemble_size})",
    )
    group.add_argument(
        "--no-smooth-base",
        dest="smooth_base",
        action="store_false",
        help="trees only: no ridge regression on the weights and their squares under them",
    )


def predictor_settings(args: argparse.Namespace) -> PredictorSettings:
    """PredictorSettings from the command line, each bad value named by its option."""
    from climb_assets.settings import PredictorSettings

    checks = [
        ("--rounds", args.rounds, args.rounds is None or args.rounds >= 1, "at least 1"),
        ("--max-rounds", args.max_rounds, args.max_rounds >= 1, "at least 1"),
        ("--learning-rate", args.learning_rate, args.learning_rate > 0, "positive"),
        ("--num-leaves", args.num_leaves, args.num_leaves >= 2, "at least 2"),
        ("--ensemble-size", args.ensemble_size, args.ensemble_size >= 1, "at least 1"),
    ]
    for option, value, ok, rule in checks:
        if not ok:
            raise PredictorCliError(f"{option} {value}: must be {rule}")
    return PredictorSettings(
        rounds=args.rounds,
        max_rounds=args.max_rounds,
        learning_rate=args.learning_rate,
        num_leaves=args.num_leaves,
        ensemble_size=args.ensemble_size,
        smooth_base=args.smooth_base,
    )


def _add_predict_parser(actions: Any) -> None:
    predict = actions.add_parser("predict", help="score mixtures with a saved model")
    predict.add_argument("--model", type=Path, required=True, metavar="DIR", help="from `fit`")
    predict.add_argument(
        "--mixtures",
        type=Path,
        required=True,
        metavar="FILE",
        help="CSV/Parquet holding the model's weight columns",
    )
    predict.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the table with 'predicted' and 'predicted_spread' columns here (CSV or "
        "Parquet by extension); default: CSV on stdout",
    )
    predict.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="allowed |sum(weights) - 1| per row before it is an error (default: the one "
        f"used at fit, else {DEFAULT_TOLERANCE:g})",
    )
    predict.add_argument(
        "--renormalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="divide each weight row by its sum; the output holds the weights as scored "
        "(default: as at fit)",
    )


def _add_tolerance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"allowed |sum(weights) - 1| per row before it is an error (default "
        f"{DEFAULT_TOLERANCE:g}; `fit` saves it for `predict`)",
    )
    parser.add_argument(
        "--renormalize",
        action="store_true",
        help="divide each weight row by its sum (percentages, rows summing to 100 or 0.98)",
    )


def _add_output_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["table", "json"], default="table", help="output")


def run(args: argparse.Namespace) -> int:
    """Run one `climb predictor` action; user errors print one line on stderr and return 2."""
    handlers = {"cv": _run_cv, "fit": _run_fit, "predict": _run_predict, "propose": _run_propose}
    try:
        handlers[args.predictor_action](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"climb predictor {args.predictor_action}: error: {err}", file=sys.stderr)
        return 2
    return 0


@dataclass
class RunTable:
    """The parsed runs: weights (n, k), objective (n,), and the names they came from."""

    source: str  # the table, or "WEIGHTS + SCORES" for two joined files
    weight_columns: list[str]
    weights: np.ndarray
    score_columns: list[str]
    score_weights: list[float]
    objective: np.ndarray
    keys: list[str] | None = None  # run ids of the --key column, in row order


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
        raise PredictorCliError(f"{path}: not a readable table: {_reason(err)}") from None
    raise PredictorCliError(f"{path}: unknown table type {suffix!r}; use .csv, .tsv or .parquet")


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
        if any(char in token for char in "*?["):
            matches = fnmatch.filter(available, token)
        else:
            matches = [token] if token in available else []
        if not matches and any(char in token for char in "*?["):
            raise PredictorCliError(
                f"{option} {token!r} matches no column; {_near_or_listed(token, available)}"
            )
        if not matches:
            raise PredictorCliError(f"{option}: {no_column(token, available)}")
        chosen.extend(name for name in matches if name not in chosen)
    if len(chosen) < 2:
        raise PredictorCliError(f"{option} selects {chosen}: a mixture needs at least 2 columns")
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


def _is_table_file(value: str | Path | None) -> bool:
    return value is not None and Path(value).suffix.lower() in {
        *TABLE_SUFFIXES,
        *PARQUET_SUFFIXES,
    }


def load_run_table(args: argparse.Namespace) -> RunTable:
    """Read TABLE (or the joined --weights/--scores files) into validated weights and one
    objective per row."""
    score_columns = args.score or [DEFAULT_SCORE]
    score_weights = _score_weights(score_columns, args.score_weight)
    if args.table is None and args.weights_file is None and _is_table_file(args.weights):
        print(
            f"note: --weights {args.weights} as a file is deprecated; use --weights-file",
            file=sys.stderr,
        )
        args.weights_file, args.weights = Path(args.weights), None
    if args.weights is not None and args.weight_columns is not None:
        raise PredictorCliError("--weights and --weight-columns both name columns: give one")
    if args.table is None:
        return _load_joined(args, score_columns, score_weights)
    if args.weights_file is not None or args.scores is not None or args.key is not None:
        raise PredictorCliError(
            "give either TABLE or --weights-file FILE --scores FILE --key COL, not both"
        )
    if _is_table_file(args.weights):
        raise PredictorCliError(
            f"--weights {args.weights} is a file, but --weights names columns; for two files "
            "drop TABLE and give --weights-file FILE --scores FILE --key COL"
        )
    df = read_table(args.table)
    option, spec = _weight_spec(args)
    columns = resolve_weight_columns(spec or DEFAULT_WEIGHTS, df.columns, option)
    weights = _validated_weights(df, columns, args.tolerance, args.table, args.renormalize)
    objective = _objective(df, score_columns, score_weights, args.table)
    return RunTable(str(args.table), columns, weights, score_columns, score_weights, objective)


def _weight_spec(args: argparse.Namespace) -> tuple[str, str | None]:
    """(option named in errors, its comma-separated names/globs or None)."""
    if args.weight_columns is not None:
        return "--weight-columns", args.weight_columns
    return "--weights", args.weights


def _two_file_problem(args: argparse.Namespace) -> str | None:
    """What two-file mode still lacks, in words; None when nothing."""
    given = [args.weights_file is not None, args.scores is not None, args.key is not None]
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
    args: argparse.Namespace, score_columns: list[str], score_weights: list[float]
) -> RunTable:
    """Weights from one file, scores from another, inner-joined on --key."""
    problem = _two_file_problem(args)
    if problem is not None:
        raise PredictorCliError(problem)
    weights_path, key = Path(args.weights_file), args.key
    weights_df, scores_df = read_table(weights_path), read_table(args.scores)
    for path, df in ((weights_path, weights_df), (args.scores, scores_df)):
        _check_key(df, key, path)
    others = [name for name in weights_df.columns if name != key]
    option, spec = _weight_spec(args)
    columns = (
        resolve_weight_columns(spec, others, option)
        if spec
        else resolve_weight_columns(",".join(others), others, f"{weights_path}'s columns")
    )
    weights = _validated_weights(
        weights_df, columns, args.tolerance, weights_path, args.renormalize
    )
    objective = _objective(scores_df, score_columns, score_weights, args.scores)
    left = pl.DataFrame({key: _key_strings(weights_df[key]), "_w": np.arange(len(weights))})
    right = pl.DataFrame({key: _key_strings(scores_df[key]), "_s": np.arange(len(objective))})
    joined = left.join(right, on=key, how="inner", maintain_order="left")
    if joined.height == 0:
        raise PredictorCliError(
            f"no {key!r} value is in both {weights_path} and {args.scores}: nothing to join"
        )
    unmatched = (left.height - joined.height, right.height - joined.height)
    if any(unmatched):
        print(
            f"note: {unmatched[0]} run(s) of {weights_path} have no score and {unmatched[1]} "
            f"of {args.scores} no weights; they are left out",
            file=sys.stderr,
        )
    return RunTable(
        f"{weights_path} + {args.scores}",
        columns,
        weights[joined["_w"].to_numpy()],
        score_columns,
        score_weights,
        objective[joined["_s"].to_numpy()],
        keys=joined[key].to_list(),
    )


def _check_key(df: pl.DataFrame, key: str, path: Path) -> None:
    if key not in df.columns:
        raise PredictorCliError(f"{path}: --key: {no_column(key, df.columns)}")
    if df[key].null_count():
        raise PredictorCliError(f"{path}: --key column {key!r} has empty values")
    duplicated = df.filter(pl.col(key).is_duplicated())[key]
    if len(duplicated):
        raise PredictorCliError(
            f"{path}: --key {key!r} value {duplicated[0]!r} appears more than once; run ids "
            "must be unique"
        )


def _key_strings(column: pl.Series) -> pl.Series:
    """Keys compared as text, so 7 in one file matches "7" in the other."""
    return column.cast(pl.Utf8)


def _validated_weights(
    df: pl.DataFrame, columns: list[str], tolerance: float, path: Path, renormalize: bool
) -> np.ndarray:
    from climb_assets.core.search.mixtures import validate_mixture_table

    missing = [name for name in columns if name not in df.columns]
    if missing:
        raise PredictorCliError(f"{path}: missing weight column(s) {missing}")
    try:  # cells first (numeric, finite, non-negative); the sums are checked below
        weights = validate_mixture_table(df, columns, atol=np.inf)
    except ValueError as err:
        raise PredictorCliError(f"{path}: {err}") from err
    totals = weights.sum(axis=1)
    if renormalize:
        empty = np.flatnonzero(totals <= 0)
        if empty.size:
            raise PredictorCliError(
                f"{path}: row {empty[0] + 1}: weights {columns} are all 0, nothing to "
                f"renormalize; {empty.size} row(s) affected"
            )
    else:
        bad = np.flatnonzero(np.abs(totals - 1) > tolerance)
        if bad.size:
            raise PredictorCliError(
                f"{path}: row {bad[0] + 1}: weights {columns} sum to {totals[bad[0]]:.8g}, not 1 "
                f"(--tolerance {tolerance:g}); {bad.size} row(s) affected. Pass --renormalize to "
                "divide each row by its sum (percentages, rows summing to 100 or 0.98), or "
                "raise --tolerance"
            )
    return weights / totals[:, None]


def _score_weights(score_columns: list[str], given: list[float] | None) -> list[float]:
    if given is None:
        return [1.0] * len(score_columns)
    if len(given) != len(score_columns):
        raise PredictorCliError(
            f"{len(given)} --score-weight for {len(score_columns)} --score: give one per score"
        )
    return list(given)


def _objective(
    df: pl.DataFrame, columns: list[str], weights: list[float], path: Path
) -> np.ndarray:
    for name in columns:
        if name not in df.columns:
            raise PredictorCliError(f"{path}: --score: {no_column(name, df.columns)}")
    total = np.zeros(df.height)
    for name, weight in zip(columns, weights, strict=True):
        if not df.schema[name].is_numeric():
            raise PredictorCliError(
                f"{path}: score column {name!r} is {df.schema[name]}, not numeric"
            )
        values = df[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise PredictorCliError(
                f"{path}: row {bad[0] + 1}, column {name!r}: score is missing or not finite "
                f"({bad.size} row(s) affected); drop or fix those runs"
            )
        total += weight * values
    return total


def _require_rows(table: RunTable, needed: int, action: str) -> None:
    if len(table.objective) < needed:
        raise PredictorCliError(
            f"{table.source} has {len(table.objective)} row(s); `{action}` needs at least {needed}"
        )


def _require_direction(args: argparse.Namespace) -> bool:
    if args.maximize is None:
        raise PredictorCliError("say which way the objective goes: --maximize or --minimize")
    return bool(args.maximize)


def _run_cv(args: argparse.Namespace) -> None:
    from climb_assets.core.search.predictor import MIN_CV_ROWS, cross_validated_spearman

    if args.folds < 2:
        raise PredictorCliError(
            f"--folds {args.folds}: cross-validation needs at least 2 folds (leave-one-out is "
            "used automatically when rows are fewer than --folds)"
        )
    settings = predictor_settings(args)
    table = load_run_table(args)
    _require_rows(table, MIN_CV_ROWS, "cv")
    rho = cross_validated_spearman(
        table.weights, table.objective, args.folds, args.seed, settings=settings
    )
    folds = min(args.folds, len(table.objective))
    result = {"spearman": rho, "folds": folds, "rows": len(table.objective)}
    if args.format == "json":
        print(json.dumps(result))
    else:
        print(f"spearman {rho:.4f}  ({folds}-fold out-of-fold, {len(table.objective)} rows)")


def _check_model_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PredictorCliError(
            f"--out {out} is an existing file: a predictor is saved as a directory"
        )
    if not out.exists() and out.suffix.lower() in FILE_SUFFIXES:
        raise PredictorCliError(
            f"--out {out} looks like a file name, but a predictor is saved as a directory "
            f"(one model file per ensemble member plus predictor.json); give a directory, e.g. "
            f"--out {out.with_suffix('')}"
        )


def _run_fit(args: argparse.Namespace) -> None:
    from climb_assets.core.search.predictor import MIN_FIT_ROWS, fit_predictor

    maximize = _require_direction(args)
    _check_model_dir(args.out)
    settings = predictor_settings(args)
    table = load_run_table(args)
    _require_rows(table, MIN_FIT_ROWS, "fit")
    predictor = fit_predictor(
        table.weights,
        table.objective,
        args.seed,
        maximize,
        table.weight_columns,
        settings=settings,
    )
    predictor.info |= {
        "source_table": table.source,
        "score_columns": table.score_columns,
        "score_weights": table.score_weights,
        "tolerance": args.tolerance,  # `predict` reads mixtures as `fit` read the runs
        "renormalize": args.renormalize,
    }
    predictor.save(args.out)
    info = predictor.info
    print(
        f"saved predictor to {args.out} ({len(table.objective)} rows, {info['members']} "
        f"models x {info['rounds']} rounds, rounds by {info['round_selection']}); "
        "`climb predictor cv` reports its cross-validated Spearman"
    )


def _run_predict(args: argparse.Namespace) -> None:
    from climb_assets.core.search.predictor import Predictor

    predictor = Predictor.load(args.model)
    df = read_table(args.mixtures)
    columns = predictor.weight_columns
    missing = [name for name in columns if name not in df.columns]
    if missing:
        raise PredictorCliError(
            f"{args.mixtures}: missing weight column(s) {missing}; the model in {args.model} "
            f"scores mixtures of {columns}"
        )
    tolerance = args.tolerance
    if tolerance is None:
        tolerance = float(predictor.info.get("tolerance", DEFAULT_TOLERANCE))
    renormalize = args.renormalize
    if renormalize is None:
        renormalize = bool(predictor.info.get("renormalize", False))
    weights = _validated_weights(df, columns, tolerance, args.mixtures, renormalize)
    result = df.with_columns(  # the weights as scored: summing to 1 exactly
        *(pl.Series(name, weights[:, j]) for j, name in enumerate(columns)),
        pl.Series("predicted", predictor.predict(weights)),
        pl.Series("predicted_spread", predictor.predict_spread(weights)),
    )
    if args.out is None:
        sys.stdout.write(result.write_csv())
    else:
        write_table(result, args.out)


def write_table(df: pl.DataFrame, path: Path) -> None:
    """Write CSV/TSV or Parquet by extension, atomically."""
    suffix = Path(path).suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        write_parquet(df, path)
    elif suffix in TABLE_SUFFIXES:
        with atomic_path(path) as tmp:
            df.write_csv(tmp, separator=TABLE_SUFFIXES[suffix])
    else:
        raise PredictorCliError(
            f"--out {path}: unknown table type {suffix!r}; use .csv or .parquet"
        )


def _run_propose(args: argparse.Namespace) -> None:
    from climb_assets.core.search.predictor import MIN_FIT_ROWS, choose_final, fit_predictor
    from climb_assets.core.search.strategy import final_trust_region

    maximize = _require_direction(args)
    if args.pool_size < 1 or args.top_k < 1:
        raise PredictorCliError("--pool-size and --top-k must be at least 1")
    if not 0 <= args.region_radius <= 1:
        raise PredictorCliError(
            f"--region-radius {args.region_radius}: a total-variation distance is in [0, 1]"
        )
    if not 0 <= args.min_weight < 1:
        raise PredictorCliError(f"--min-weight {args.min_weight}: a weight in [0, 1) is needed")
    if args.trust_radius < 0:
        raise PredictorCliError(f"--trust-radius {args.trust_radius}: must be non-negative")
    settings = predictor_settings(args)
    table = load_run_table(args)
    _require_rows(table, MIN_FIT_ROWS, "propose")
    predictor = fit_predictor(
        table.weights,
        table.objective,
        args.seed,
        maximize,
        table.weight_columns,
        settings=settings,
    )
    constraints = proposal_constraints(table.weights)
    pool = proposal_pool(table.weights, args.pool_size, args.seed)
    choice = choose_final(
        predictor,
        pool,
        table.weights,
        table.objective,
        args.top_k,
        maximize,
        constraints,
        args.region_radius,
        min_weight=args.min_weight,
        trust=final_trust_region(table.weights, args.trust_radius, not args.allow_outside),
    )
    best_row = int(np.argmax(table.objective) if maximize else np.argmin(table.objective))
    observed: dict[str, Any] = {
        "row": best_row + 1,
        "objective": choice.best_observed_score,
        "predicted": choice.best_observed_predicted,
        "weights": dict(
            zip(table.weight_columns, choice.best_observed_weights.tolist(), strict=True)
        ),
    }
    if table.keys is not None:
        observed["key"] = table.keys[best_row]
    result = {
        "direction": "maximize" if maximize else "minimize",
        "predicted": choice.predicted,
        "predicted_spread": float(predictor.predict_spread(choice.mixture[None])[0]),
        "method": choice.method,
        "weights": dict(zip(table.weight_columns, choice.mixture.tolist(), strict=True)),
        "top_k": len(choice.top_indices),
        "region_size": choice.region_size,
        "min_weight": args.min_weight,
        "kept_slivers": choice.kept_slivers,
        "pool_size": len(pool) + len(table.weights),
        "best_observed": observed,
        "trust_region": None
        if choice.trust is None
        else choice.trust.to_json(table.weight_columns),
    }
    _print_proposal(result, args.format)


def proposal_constraints(weights: np.ndarray) -> MixtureConstraints:
    """The table's mean mixture as prior; groups the table never uses stay at 0 (the predictor
    knows nothing about them)."""
    from climb_assets.core.search.mixtures import MixtureConstraints

    used = (weights > 0).any(axis=0).astype(float)
    prior = weights.mean(axis=0)
    return MixtureConstraints(prior=prior / prior.sum(), upper=used, min_weight=0.0)


def proposal_pool(weights: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Half RegMix draws around the table's mean mixture, half perturbations of its rows."""
    from climb_assets.core.search.mixtures import sample_around, sample_dirichlet, unique_rows

    constraints = proposal_constraints(weights)
    rng = np.random.default_rng(seed)
    fresh = sample_dirichlet(constraints, size // 2, rng)
    around = sample_around(weights, size - size // 2, constraints, rng)
    return unique_rows(np.vstack([fresh, around]))


def _print_proposal(result: dict[str, Any], output_format: str) -> None:
    from climb_assets.core.search.trust_region import trust_lines

    if output_format == "json":
        print(json.dumps(result, indent=2))
        return
    observed = result["best_observed"]
    how = {
        "region mean": f"mean of {result['region_size']} of the top {result['top_k']}",
        "best predicted": "the best predicted mixture",
        "best observed": "the best observed run (the region mean predicted worse)",
    }[result["method"]]
    print(
        f"predicted objective ({result['direction']}): {result['predicted']:.6g} "
        f"+- {result['predicted_spread']:.2g}  [{how}; {result['pool_size']:,} mixtures scored]"
    )
    label = f"row {observed['row']}" + (f" ({observed['key']})" if "key" in observed else "")
    print(
        f"best observed run: {label}, objective {observed['objective']:.6g}, "
        f"predicted {observed['predicted']:.6g}"
    )
    if result["kept_slivers"]:
        print(
            f"weights under --min-weight {result['min_weight']:g} kept: the predictor scores the "
            "mixture higher with them"
        )
    for line in trust_lines(result["trust_region"], "row"):
        print(line)
    width = max(len(name) for name in result["weights"])
    for name, weight in result["weights"].items():
        print(f"  {name:<{width}}  {weight:.6f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="climb")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
