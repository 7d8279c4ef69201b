"""The options of `climb predictor` and what they become: where the runs are (a RunTableSource),
and the settings they stand for, checked by the settings' own models (PredictorSettings,
SearchSettings) so an option accepts what its YAML key accepts. Defaults come from the models."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from climb_assets.cli.options import settings_from_args
from climb_assets.core.search.run_table import DEFAULT_TOLERANCE, RunTableSource
from climb_assets.settings import PredictorSettings, SearchSettings

# Defaults and ranges of the options standing for settings come from the settings' models.
SEARCH = SearchSettings()
# Settings field -> its option (an option's value is args.<option as a name>).
PREDICTOR_OPTIONS = {
    "rounds": "--rounds",
    "max_rounds": "--max-rounds",
    "learning_rate": "--learning-rate",
    "num_leaves": "--num-leaves",
    "ensemble_size": "--ensemble-size",
    "smooth_base": "--no-smooth-base",
}
PROPOSE_OPTIONS = {
    "final_top_k": "--top-k",
    "candidate_pool_size": "--pool-size",
    "final_region_radius": "--region-radius",
    "final_min_weight": "--min-weight",
    "final_trust_radius": "--trust-radius",
}
CV_OPTIONS = {"cv_folds": "--folds"}
CV_HINTS = {"--folds": "leave-one-out is used automatically when rows are fewer than --folds"}


def table_options() -> argparse.ArgumentParser:
    """The options of every action that reads runs: where they are, which columns, the model."""
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
    _add_objective_options(common)
    _add_model_options(common)
    _add_tolerance(common)
    return common


def _add_objective_options(common: argparse.ArgumentParser) -> None:
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


def _add_model_options(parser: argparse.ArgumentParser) -> None:
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


def add_folds(cv: argparse.ArgumentParser) -> None:
    """`cv`'s --folds (search.cv_folds)."""
    cv.add_argument(
        "--folds",
        type=int,
        default=SEARCH.cv_folds,
        help=f"folds, at least 2 (default {SEARCH.cv_folds})",
    )


def add_propose_options(propose: argparse.ArgumentParser) -> None:
    """`propose`'s own options: the search's final-choice settings, and --allow-outside."""
    propose.add_argument(
        "--top-k",
        type=int,
        default=SEARCH.final_top_k,
        help=f"mixtures averaged (default {SEARCH.final_top_k})",
    )
    propose.add_argument(
        "--pool-size",
        type=int,
        default=SEARCH.candidate_pool_size,
        help=f"mixtures scored (default {SEARCH.candidate_pool_size})",
    )
    propose.add_argument(
        "--region-radius",
        type=float,
        default=SEARCH.final_region_radius,
        help="average only top-k mixtures within this total-variation distance of the best "
        f"predicted one (default {SEARCH.final_region_radius})",
    )
    propose.add_argument(
        "--min-weight",
        type=float,
        default=SEARCH.final_min_weight,
        help="zero the proposal's weights below this and re-normalize, unless the predictor "
        "scores the mixture higher with them (as the search does; the output says when they "
        f"are kept); 0 keeps every sliver the average leaves (default {SEARCH.final_min_weight})",
    )
    propose.add_argument(
        "--trust-radius",
        type=float,
        default=SEARCH.final_trust_radius,
        metavar="MULT",
        help="choose only mixtures within MULT x the runs' median nearest-neighbour "
        "total-variation distance of some run, each weight within the runs' range +- half "
        f"that; 0 turns the trust region off (default {SEARCH.final_trust_radius})",
    )
    propose.add_argument(
        "--allow-outside",
        action="store_true",
        help="choose among every candidate; only report a choice outside the trust region",
    )


def add_predict_options(predict: argparse.ArgumentParser) -> None:
    """`predict`'s options: a saved model, the mixtures, where to write their scores."""
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


def add_output_format(parser: argparse.ArgumentParser) -> None:
    """--format: a table for people, JSON for programs."""
    parser.add_argument("--format", choices=["table", "json"], default="table", help="output")


def run_table_source(args: argparse.Namespace) -> RunTableSource:
    """Where the runs are, from the options of the same names (--weights, --key, ...)."""
    return RunTableSource(
        **{field.name: getattr(args, field.name) for field in fields(RunTableSource)}
    )


def predictor_settings(args: argparse.Namespace) -> PredictorSettings:
    """PredictorSettings from the command line, each refused value named by its option."""
    return settings_from_args(PredictorSettings, args, PREDICTOR_OPTIONS)


def proposal_settings(args: argparse.Namespace) -> SearchSettings:
    """The search's final-choice settings from `propose`'s options, checked as the search's."""
    return settings_from_args(SearchSettings, args, PROPOSE_OPTIONS)


def cv_folds(args: argparse.Namespace) -> int:
    """--folds, checked as search.cv_folds."""
    return settings_from_args(SearchSettings, args, CV_OPTIONS, CV_HINTS).cv_folds
