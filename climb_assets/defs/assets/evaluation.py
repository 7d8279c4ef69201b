"""Evaluation stage: the search's optimal mixture against the obvious baselines, each trained as
a larger model at equal tokens on the same seeds, with a check that the optimal wins by more
than the seed noise."""

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
import numpy as np

from climb_assets.core.clustering.naming import round_for_reading
from climb_assets.core.search.evaluation_run import (
    CHECK,
    Evaluation,
    EvaluationInputs,
    run_evaluation,
)
from climb_assets.core.search.mixtures import constraint_budget
from climb_assets.core.shared.atomic import atomic_dir, write_json, write_parquet
from climb_assets.core.shared.identity import StaleInput, search_identity
from climb_assets.core.shared.progress import notice
from climb_assets.defs.failures import one_line_failures
from climb_assets.defs.graph import OPTIONAL_TAG
from climb_assets.defs.metadata import (
    plot,
    report_metadata,
    table,
)
from climb_assets.defs.report import write_report
from climb_assets.defs.resources import ClimbSettings
from climb_assets.settings import Settings
from climb_assets.store import (
    CURVES_FILE,
    RUNS_FILE,
    SUMMARY_FILE,
    Layout,
    corpus_token_counts,
    iteration_key,
    iteration_runs,
)


def missing_upstream(settings: Settings, layout: Layout) -> str | None:
    """What the evaluation needs but is not materialized, said as what to run; None when ready."""
    needed = [
        ("optimal_mixture", layout.optimal_mixture),
        ("proxy_pool", layout.proxy_pool_manifest),
        ("super_clusters", layout.super_clusters),
        *[
            (f"bootstrap_iteration {iteration_key(i)}", layout.iteration(iteration_key(i)))
            for i in range(1, settings.iterations + 1)
        ],
    ]
    for name, path in needed:
        if not path.exists():
            return (
                f"mixture_evaluation needs {name}, which is not materialized ({path} is "
                "missing): run `climb run` (or materialize it in the UI) first"
            )
    return None


def evaluation_inputs(settings: Settings, layout: Layout) -> EvaluationInputs:
    """What the evaluation reads from the store (`missing_upstream` says first what is not
    there)."""
    chosen = json.loads(layout.optimal_mixture.read_text())["weights"]
    history = iteration_runs(layout, settings.iterations + 1)
    if history is None:
        raise ValueError("mixture_evaluation needs at least one bootstrap iteration")
    return EvaluationInputs(
        optimal=np.array([chosen[key] for key in sorted(chosen, key=int)], dtype=float),
        history=history,
        token_counts=corpus_token_counts(layout, settings),
        constraint_budget=constraint_budget(settings),
        pool_dir=layout.proxy_pool.resolve(),
        pool_manifest=layout.proxy_pool_manifest.read_text(),
        work_dir=layout.evaluation_work.resolve(),
    )


def evaluate(
    settings: Settings,
    layout: Layout,
    identity: Mapping[str, str],
    log: Callable[[str], None] = print,
    announce: Callable[[str], None] | None = None,
) -> Evaluation:
    """Run the evaluation on the store's search (`core.search.evaluation_run`) and write
    runs.parquet, loss_curves.parquet and summary.json under layout.evaluation atomically."""
    result = run_evaluation(settings, evaluation_inputs(settings, layout), identity, log, announce)
    with atomic_dir(layout.evaluation) as tmp:
        write_parquet(result.runs, tmp / RUNS_FILE)
        write_parquet(result.curves, tmp / CURVES_FILE)
        write_json(result.summary, tmp / SUMMARY_FILE)
    return result


@dg.asset(
    deps=["optimal_mixture"],
    group_name="evaluation",
    kinds={"pytorch"},
    tags={OPTIONAL_TAG: "true"},
    code_version="2",  # 2: summary.json records the search's and super-clusters' identities
    pool="gpu",
    check_specs=[
        dg.AssetCheckSpec(
            CHECK,
            asset="mixture_evaluation",
            description="The optimal's mean objective exceeds every baseline's by more than the "
            "larger of the two seed stds (a baseline identical to the optimal is left out).",
        )
    ],
    description="The optimal mixture against natural (token shares), uniform, best single "
    "super-cluster, best observed proxy run and a random Dirichlet draw: a larger model trained "
    "on each at equal tokens with the same seeds, scored on the search targets (objective) and "
    "the evaluation-only targets; mean and std over seeds.",
)
@one_line_failures
def mixture_evaluation(
    context: dg.AssetExecutionContext, climb: ClimbSettings
) -> dg.MaterializeResult:
    from climb_assets.core.search.evaluation import (
        compact_mean_std_table,
        margins_table,
        mixture_weights_table,
    )
    from climb_assets.core.shared.plots import evaluation_margins

    settings, layout = climb.resolve()
    if problem := missing_upstream(settings, layout):
        raise dg.Failure(problem)
    try:
        identity = search_identity(layout, "mixture_evaluation", context.log.warning)
    except StaleInput as err:
        raise dg.Failure(description=str(err)) from err
    result = evaluate(
        settings, layout, identity, context.log.info, lambda line: notice(context.log, line)
    )
    summary = result.summary
    chart = evaluation_margins(summary["margins"], len(summary["seeds"]))
    check_metadata: dict[str, Any] = {}
    for m in summary["margins"]:
        check_metadata[f"margin_{m['baseline']}"] = _readable(m["margin"])
        check_metadata[f"spread_{m['baseline']}"] = _readable(m["spread"])
        check_metadata[f"paired_spread_{m['baseline']}"] = _readable(m.get("paired_std"))
    page = write_report(layout)  # the HTML page now shows this result too
    return dg.MaterializeResult(
        metadata={
            "objective_direction": "higher is better",
            "tokens_per_model": settings.evaluation.tokens,
            "seeds": len(summary["seeds"]),
            "optimal_objective_mean": _readable(summary["mixtures"]["optimal"]["objective_mean"]),
            **identity,
            "mean_std": table(compact_mean_std_table(summary)),
            "margins": table(margins_table(summary["margins"])),
            "mixtures": table(mixture_weights_table(summary)),
            **({} if chart is None else {"margins_chart": plot(chart, "margins over baselines")}),
            "path": dg.MetadataValue.path(str(layout.evaluation)),
            **report_metadata(page),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=CHECK,
                passed=summary[CHECK],
                severity=dg.AssetCheckSeverity.WARN,
                metadata=check_metadata,
            )
        ],
    )


def _readable(value: float | None) -> float:
    """Rounded to 4 significant digits, NaN when missing: a float the Plots tab can chart."""
    rounded = None if value is None else round_for_reading(float(value))
    return math.nan if rounded is None else rounded
