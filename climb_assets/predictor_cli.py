"""`climb predictor`: the mixture -> score predictor on any table of past training runs.

Usable without Dagster or the rest of the pipeline: `python -m climb_assets.predictor_cli
predictor ACTION ...` works too.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from climb_assets.core.atomic import atomic_path, write_parquet

DESCRIPTION = """\
Fit, cross-validate and use CLIMB's LightGBM predictor on a table of past runs.

TABLE is a CSV (.csv, .tsv) or Parquet (.parquet, .pq) file with one row per training run:
weight columns (the run's data mixture, non-negative, summing to 1 per row) and one or more
score columns. Rows whose weights sum to within --tolerance of 1 are renormalized exactly.

Weight columns: --weights takes comma-separated names and/or glob patterns (default 'w_*', the
columns written by `climb`); matches keep the table's column order. They are never guessed
from the data: a table without w_* columns needs --weights.

Objective: --score COL (default 'score'); give --score several times for a weighted sum, with
one --score-weight per --score (default 1 each). Use a negative weight to fold a lower-is-better
score into a higher-is-better objective. fit and propose need the direction: --maximize or
--minimize.

actions:
  cv       out-of-fold Spearman correlation of the predictor (k-fold; leave-one-out when rows
           are fewer than --folds)
  fit      fit on every row and save model.txt + predictor.json into --out DIR
  predict  score the mixtures of --mixtures FILE with a saved --model DIR
  propose  best mixture: the mean of the --top-k predicted of a --pool-size pool (Dirichlet
           draws around the table's mixtures, staying on the groups the table uses)
"""

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
DEFAULT_WEIGHTS = "w_*"
DEFAULT_SCORE = "score"


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
    _add_output_format(cv)
    fit = actions.add_parser("fit", parents=[table], help="fit on all rows and save the model")
    fit.add_argument("--out", type=Path, required=True, metavar="DIR", help="model directory")
    propose = actions.add_parser("propose", parents=[table], help="best mixture by prediction")
    propose.add_argument("--top-k", type=int, default=16, help="mixtures averaged (default 16)")
    propose.add_argument(
        "--pool-size", type=int, default=20_000, help="mixtures scored (default 20000)"
    )
    _add_output_format(propose)
    _add_predict_parser(actions)
    parser.set_defaults(handler=run)
    return parser


def _table_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("table", type=Path, metavar="TABLE", help="CSV or Parquet of past runs")
    common.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        help="weight columns: comma-separated names or globs (default 'w_*')",
    )
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
    common.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    common.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_tolerance(common)
    return common


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
        help="write the table with a 'predicted' column here (CSV or Parquet by extension); "
        "default: CSV on stdout",
    )
    _add_tolerance(predict)


def _add_tolerance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="allowed |sum(weights) - 1| per row before it is an error (default 1e-3)",
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
    """The parsed table: weights (n, k), objective (n,), and the names they came from."""

    path: Path
    weight_columns: list[str]
    weights: np.ndarray
    score_columns: list[str]
    score_weights: list[float]
    objective: np.ndarray


def read_table(path: Path) -> pl.DataFrame:
    """A CSV/TSV or Parquet file as a DataFrame, chosen by extension."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return pl.read_csv(path, separator=TABLE_SUFFIXES[suffix], infer_schema_length=None)
    if suffix in PARQUET_SUFFIXES:
        return pl.read_parquet(path)
    raise PredictorCliError(f"{path}: unknown table type {suffix!r}; use .csv, .tsv or .parquet")


def resolve_weight_columns(spec: str, available: list[str]) -> list[str]:
    """Column names from comma-separated names/globs, in table order for globs, no repeats."""
    chosen: list[str] = []
    for token in (part.strip() for part in spec.split(",")):
        if not token:
            continue
        if any(char in token for char in "*?["):
            matches = fnmatch.filter(available, token)
        else:
            matches = [token] if token in available else []
        if not matches:
            raise PredictorCliError(
                f"--weights {token!r} matches no column; available columns: {available}"
            )
        chosen.extend(name for name in matches if name not in chosen)
    if len(chosen) < 2:
        raise PredictorCliError(f"--weights selects {chosen}: a mixture needs at least 2 columns")
    return chosen


def load_run_table(args: argparse.Namespace) -> RunTable:
    """Read TABLE and turn it into validated weights and one objective per row."""
    df = read_table(args.table)
    columns = resolve_weight_columns(args.weights, df.columns)
    weights = _validated_weights(df, columns, args.tolerance, args.table)
    score_columns = args.score or [DEFAULT_SCORE]
    score_weights = _score_weights(score_columns, args.score_weight)
    objective = _objective(df, score_columns, score_weights, args.table)
    return RunTable(args.table, columns, weights, score_columns, score_weights, objective)


def _validated_weights(
    df: pl.DataFrame, columns: list[str], tolerance: float, path: Path
) -> np.ndarray:
    from climb_assets.core.mixtures import validate_mixture_table

    try:
        weights = validate_mixture_table(df, columns, atol=tolerance)
    except ValueError as err:
        raise PredictorCliError(f"{path}: {err}") from err
    return weights / weights.sum(axis=1, keepdims=True)


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
    missing = [name for name in columns if name not in df.columns]
    if missing:
        raise PredictorCliError(
            f"{path}: unknown score column(s) {missing}; available: {df.columns}"
        )
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
            f"{table.path} has {len(table.objective)} row(s); `{action}` needs at least {needed}"
        )


def _require_direction(args: argparse.Namespace) -> bool:
    if args.maximize is None:
        raise PredictorCliError("say which way the objective goes: --maximize or --minimize")
    return bool(args.maximize)


def _run_cv(args: argparse.Namespace) -> None:
    from climb_assets.core.predictor import MIN_CV_ROWS, cross_validated_spearman

    table = load_run_table(args)
    _require_rows(table, MIN_CV_ROWS, "cv")
    rho = cross_validated_spearman(table.weights, table.objective, args.folds, args.seed)
    folds = min(max(2, args.folds), len(table.objective))
    result = {"spearman": rho, "folds": folds, "rows": len(table.objective)}
    if args.format == "json":
        print(json.dumps(result))
    else:
        print(f"spearman {rho:.4f}  ({folds}-fold out-of-fold, {len(table.objective)} rows)")


def _run_fit(args: argparse.Namespace) -> None:
    from climb_assets.core.predictor import (
        MIN_CV_ROWS,
        MIN_FIT_ROWS,
        cross_validated_spearman,
        fit_predictor,
    )

    maximize = _require_direction(args)
    table = load_run_table(args)
    _require_rows(table, MIN_FIT_ROWS, "fit")
    predictor = fit_predictor(
        table.weights, table.objective, args.seed, maximize, table.weight_columns
    )
    rho = (
        cross_validated_spearman(table.weights, table.objective, args.folds, args.seed)
        if len(table.objective) >= MIN_CV_ROWS
        else None
    )
    predictor.info |= {
        "source_table": str(table.path),
        "score_columns": table.score_columns,
        "score_weights": table.score_weights,
        "cv_spearman": rho,
    }
    predictor.save(args.out)
    cv_text = "n/a (too few rows)" if rho is None else f"{rho:.4f}"
    print(
        f"saved predictor to {args.out} ({len(table.objective)} rows, "
        f"{predictor.info['rounds']} rounds, cv spearman {cv_text})"
    )


def _run_predict(args: argparse.Namespace) -> None:
    from climb_assets.core.predictor import Predictor

    predictor = Predictor.load(args.model)
    df = read_table(args.mixtures)
    weights = _validated_weights(df, predictor.weight_columns, args.tolerance, args.mixtures)
    result = df.with_columns(pl.Series("predicted", predictor.predict(weights)))
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
    from climb_assets.core.predictor import MIN_FIT_ROWS, best_mixture, fit_predictor

    maximize = _require_direction(args)
    table = load_run_table(args)
    _require_rows(table, MIN_FIT_ROWS, "propose")
    if args.pool_size < 1 or args.top_k < 1:
        raise PredictorCliError("--pool-size and --top-k must be at least 1")
    predictor = fit_predictor(
        table.weights, table.objective, args.seed, maximize, table.weight_columns
    )
    pool = proposal_pool(table.weights, args.pool_size, args.seed)
    best = best_mixture(predictor, pool, args.top_k, maximize)
    best_row = int(np.argmax(table.objective) if maximize else np.argmin(table.objective))
    result = {
        "direction": "maximize" if maximize else "minimize",
        "predicted": best.predicted,
        "weights": dict(zip(table.weight_columns, best.mixture.tolist(), strict=True)),
        "top_k": len(best.top_indices),
        "pool_size": len(pool),
        "best_observed": {"row": best_row + 1, "objective": float(table.objective[best_row])},
    }
    _print_proposal(result, args.format)


def proposal_pool(weights: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Half RegMix draws with the table's mean mixture as prior, half perturbations of its rows;
    groups the table never uses stay at 0 (the predictor knows nothing about them)."""
    from climb_assets.core.mixtures import (
        MixtureConstraints,
        sample_around,
        sample_dirichlet,
        unique_rows,
    )

    used = (weights > 0).any(axis=0).astype(float)
    prior = weights.mean(axis=0)
    constraints = MixtureConstraints(prior=prior / prior.sum(), upper=used, min_weight=0.0)
    rng = np.random.default_rng(seed)
    fresh = sample_dirichlet(constraints, size // 2, rng)
    around = sample_around(weights, size - size // 2, constraints, rng)
    return unique_rows(np.vstack([fresh, around]))


def _print_proposal(result: dict[str, Any], output_format: str) -> None:
    if output_format == "json":
        print(json.dumps(result, indent=2))
        return
    observed = result["best_observed"]
    print(
        f"predicted objective ({result['direction']}): {result['predicted']:.6g}  "
        f"[mean of top {result['top_k']} of {result['pool_size']:,} mixtures]"
    )
    print(f"best observed run: row {observed['row']}, objective {observed['objective']:.6g}")
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
