"""`climb predictor`: the mixture -> score predictor on any table of past training runs.

The command line only: the runs are read by core/search/run_table.py, the proposal is made by
core/search/proposal.py, and the options are checked by the settings' models (PredictorSettings,
SearchSettings). Usable without the rest of the pipeline: no settings file, no outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from climb_assets.cli.predictor_options import (
    add_folds,
    add_output_format,
    add_predict_options,
    add_propose_options,
    cv_folds,
    predictor_settings,
    proposal_settings,
    run_table_source,
    table_options,
)
from climb_assets.core.search.run_table import (
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


class PredictorCliError(ValueError):
    """A problem with the user's input, reported by `climb` as one line without a traceback."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `predictor` on `climb`'s subparsers; `climb` dispatches with `args.func(args)`."""
    parser = subparsers.add_parser(
        "predictor",
        help="fit / cross-validate / apply the mixture predictor on a table of past runs",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="predictor_action", required=True, metavar="ACTION")
    table = table_options()
    cv = actions.add_parser("cv", parents=[table], help="cross-validated Spearman correlation")
    add_folds(cv)
    add_output_format(cv)
    fit = actions.add_parser("fit", parents=[table], help="fit on all rows and save the model")
    fit.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="model directory (not a file)"
    )
    propose = actions.add_parser("propose", parents=[table], help="best mixture by prediction")
    add_propose_options(propose)
    add_output_format(propose)
    add_predict_options(actions.add_parser("predict", help="score mixtures with a saved model"))
    parser.set_defaults(func=run)
    return parser


def _load(source: RunTableSource) -> RunTable:
    return load_run_table(source, lambda line: print(f"note: {line}", file=sys.stderr))


def run(args: argparse.Namespace) -> int:
    """Run one `climb predictor` action; a user error reaches `climb` as one line led by
    'predictor ACTION:', which `climb` prints as `climb: error: ...` and exits 1 on."""
    handlers = {"cv": _run_cv, "fit": _run_fit, "predict": _run_predict, "propose": _run_propose}
    try:
        handlers[args.predictor_action](args)
    except (ValueError, FileNotFoundError) as err:
        raise PredictorCliError(f"predictor {args.predictor_action}: {err}") from err
    return 0


def _require_direction(args: argparse.Namespace) -> bool:
    if args.maximize is None:
        raise PredictorCliError("say which way the objective goes: --maximize or --minimize")
    return bool(args.maximize)


def _run_cv(args: argparse.Namespace) -> None:
    from climb_assets.core.search.predictor import MIN_CV_ROWS, cross_validated_spearman

    folds = cv_folds(args)
    settings = predictor_settings(args)
    table = _load(run_table_source(args))
    table.require_rows(MIN_CV_ROWS, "cv")
    rho = cross_validated_spearman(
        table.weights, table.objective, folds, args.seed, settings=settings
    )
    folds = min(folds, len(table.objective))
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

    maximize = _require_direction(args)
    search = proposal_settings(args)
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


if __name__ == "__main__":  # `python -m climb_assets.cli.predictor predictor ...`: as `climb`
    from climb_assets.cli.main import main

    sys.exit(main())
