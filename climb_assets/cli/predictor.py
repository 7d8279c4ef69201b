"""`climb predictor`: the mixture -> score predictor on any table of past training runs.

Usable without Dagster or the rest of the pipeline: `python -m climb_assets.cli.predictor
predictor ACTION ...` works too. The runs are read by core/search/run_table.py and the proposal
made by core/search/proposal.py; this module is the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from climb_assets.core.search.run_table import (
    DEFAULT_TOLERANCE,
    PARQUET_SUFFIXES,
    TABLE_SUFFIXES,
    RunTable,
    RunTableSource,
    load_run_table,
    reading_info,
    score_mixtures,
    write_table,
)

if TYPE_CHECKING:
    from climb_assets.core.search.predictor import Predictor
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

# `fit --out` names a directory; these suffixes mean the user expected a single file.
FILE_SUFFIXES = {*TABLE_SUFFIXES, *PARQUET_SUFFIXES, ".json", ".txt", ".pkl", ".pickle"}
FILE_SUFFIXES |= {".joblib", ".lgb", ".model", ".bin"}
# The search's defaults (search.final_region_radius, search.final_min_weight,
# search.final_trust_radius).
DEFAULT_REGION_RADIUS = 0.3
DEFAULT_MIN_WEIGHT = 0.01
DEFAULT_TRUST_RADIUS = 2.0


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


def run_table_source(args: argparse.Namespace) -> RunTableSource:
    """Where the runs are, from the options of the same names (--weights, --key, ...)."""
    return RunTableSource(
        **{field.name: getattr(args, field.name) for field in fields(RunTableSource)}
    )


def _load(source: RunTableSource) -> RunTable:
    return load_run_table(source, lambda line: print(f"note: {line}", file=sys.stderr))


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
    table = _load(run_table_source(args))
    table.require_rows(MIN_CV_ROWS, "cv")
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
    source = run_table_source(args)
    table = _load(source)
    table.require_rows(MIN_FIT_ROWS, "fit")
    predictor = fit_predictor(
        table.weights,
        table.objective,
        args.seed,
        maximize,
        table.weight_columns,
        settings=settings,
    )
    # `predict` reads mixtures as `fit` read the runs
    predictor.info |= reading_info(table, source)
    predictor.save(args.out)
    _print_fit(predictor, table, args.out)


def _print_fit(predictor: Predictor, table: RunTable, out: Path) -> None:
    info = predictor.info
    print(
        f"saved predictor to {out} ({len(table.objective)} rows, {info['members']} "
        f"models x {info['rounds']} rounds, rounds by {info['round_selection']}); "
        "`climb predictor cv` reports its cross-validated Spearman"
    )


def _run_predict(args: argparse.Namespace) -> None:
    from climb_assets.core.search.predictor import Predictor

    predictor = Predictor.load(args.model)
    result = score_mixtures(predictor, args.mixtures, args.model, args.tolerance, args.renormalize)
    if args.out is None:
        sys.stdout.write(result.write_csv())
    else:
        write_table(result, args.out)


def _run_propose(args: argparse.Namespace) -> None:
    from climb_assets.core.search.predictor import MIN_FIT_ROWS
    from climb_assets.core.search.proposal import propose
    from climb_assets.settings import SearchSettings

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
    search = SearchSettings(
        candidate_pool_size=args.pool_size,
        final_top_k=args.top_k,
        final_region_radius=args.region_radius,
        final_min_weight=args.min_weight,
        final_trust_radius=args.trust_radius,
    )
    settings = predictor_settings(args)
    table = _load(run_table_source(args))
    table.require_rows(MIN_FIT_ROWS, "propose")
    result = propose(table, maximize, search, settings, args.seed, not args.allow_outside)
    _print_proposal(result, args.format)


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
