"""Evaluation stage: the search's optimal mixture against the obvious baselines, each trained as
a larger model at equal tokens on the same seeds, with a check that the optimal wins by more
than the seed noise."""

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from climb_assets.core.clustering.naming import round_for_reading
from climb_assets.core.search.mixtures import constraint_budget
from climb_assets.core.search.proxy_jobs import EvaluationJob, EvaluationTrainer, absolute_targets
from climb_assets.core.shared.atomic import atomic_dir, write_json, write_parquet
from climb_assets.core.shared.execution import TasksFailed, map_proxy_tasks
from climb_assets.core.shared.identity import StaleInput, search_identity
from climb_assets.core.shared.progress import Progress, format_left, notice
from climb_assets.defs.failures import one_line_failures
from climb_assets.defs.graph import OPTIONAL_TAG
from climb_assets.defs.metadata import (
    plot,
    report_metadata,
    table,
)
from climb_assets.defs.report import write_report
from climb_assets.defs.resources import ClimbSettings
from climb_assets.settings import ProxySettings, Settings
from climb_assets.store import (
    CURVES_FILE,
    RUNS_FILE,
    SUMMARY_FILE,
    Layout,
    MissingArtifact,
    corpus_token_counts,
    iteration_key,
    iteration_runs,
)

CHECK = "optimal_beats_baselines"


def evaluation_proxy(settings: Settings) -> ProxySettings:
    """The evaluation model: the proxy's recipe at the evaluation's size and token count."""
    ev = settings.evaluation
    return settings.proxy.model_copy(
        update={
            "d_model": ev.d_model,
            "n_layers": ev.n_layers,
            "n_heads": ev.n_heads,
            "tokens_per_proxy": ev.tokens,
        }
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


@dataclass
class Evaluation:
    runs: pl.DataFrame  # mixture, same_as, seed_index, seed, objective, metrics, ...
    curves: pl.DataFrame
    summary: dict[str, Any]  # what summary.json holds


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
    result = run_evaluation(
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


def run_evaluation(
    settings: Settings,
    layout: Layout,
    identity: Mapping[str, str],
    log: Callable[[str], None] = print,
    announce: Callable[[str], None] | None = None,
) -> Evaluation:
    """Train every distinct mixture on every seed (resuming finished ones), write runs.parquet
    and summary.json (with `identity`, what it was built on: `search_identity`) under
    layout.evaluation atomically, and return them. `announce` (by default `log`) gets how many
    models will train and the time that should take, before they start."""
    from climb_assets.core.search import evaluation as ev

    mixtures = evaluation_mixtures(settings, layout)
    same = ev.same_as(mixtures)
    seeds = ev.evaluation_seeds(settings.seed, settings.evaluation.seeds)
    search_targets = absolute_targets(settings.targets)
    extra_targets = absolute_targets(settings.evaluation.targets)
    clash = {t.name for t in search_targets} & {t.name for t in extra_targets}
    if clash:
        raise ValueError(f"evaluation.targets reuse search target names {sorted(clash)}")
    trainer = EvaluationTrainer(
        evaluation_proxy(settings),
        layout.proxy_pool.resolve(),
        (*search_targets, *extra_targets),
        len(search_targets),
        evaluation_run_key(settings, layout),
    )
    distinct = [name for name in mixtures if same[name] is None]
    jobs = [
        EvaluationJob(
            name,
            index,
            seed,
            tuple(map(float, mixtures[name])),
            (layout.evaluation_work / f"{_weights_id(mixtures[name])}-seed{seed}.json").resolve(),
        )
        for name in distinct
        for index, seed in enumerate(seeds)
    ]
    done = {(job.name, job.seed_index): trainer.finished(job) for job in jobs}
    for number, job in enumerate(jobs, 1):
        if done[(job.name, job.seed_index)] is not None:
            log(
                f"evaluation {number}/{len(jobs)}: {job.name} seed {job.seed_index}: resumed "
                f"from {job.checkpoint}"
            )
    pending = [job for job in jobs if done[(job.name, job.seed_index)] is None]
    if pending:
        (announce or log)(estimate_line(settings, layout, len(pending), len(distinct), len(seeds)))
    for job, found in zip(
        pending,
        _train_evaluation(trainer, pending, settings, layout.evaluation_work.resolve(), log),
        strict=True,
    ):
        done[(job.name, job.seed_index)] = found
    rows, curves = [], []
    for name in mixtures:
        source = same[name] or name
        for index, seed in enumerate(seeds):
            found = done[(source, index)]
            base = {"mixture": name, "same_as": same[name], "seed_index": index, "seed": seed}
            # Checkpoints store keys sorted; fix the column order so fresh and resumed agree.
            scores = found["scores"]
            ordered = {"objective": scores["objective"]} | {
                k: scores[k] for k in sorted(scores) if k != "objective"
            }
            rows.append(
                base
                | ordered
                | {
                    "final_train_loss": found["final_train_loss"],
                    "train_tokens_per_second": found["train_tokens_per_second"],
                }
            )
            curves += [base | {"tokens": t, "loss": v} for t, v in found["curve"]]
    runs = pl.DataFrame(rows, schema_overrides={"same_as": pl.String}, infer_schema_length=None)
    curve_frame = pl.DataFrame(curves, schema_overrides={"same_as": pl.String})
    metrics = ["objective", *sorted(k for k in runs.columns if _is_metric(k))]
    summary = evaluation_summary(settings, mixtures, same, seeds, runs, metrics) | dict(identity)
    with atomic_dir(layout.evaluation) as tmp:
        write_parquet(runs, tmp / RUNS_FILE)
        write_parquet(curve_frame, tmp / CURVES_FILE)
        write_json(summary, tmp / SUMMARY_FILE)
    return Evaluation(runs, curve_frame, summary)


def _train_evaluation(
    trainer: EvaluationTrainer,
    pending: list[EvaluationJob],
    settings: Settings,
    work_dir: Path,
    log: Callable[[str], None],
) -> list[dict]:
    """Train the unfinished evaluation models, as many at once as the proxies' backend allows
    (local worker processes or Ray); each checkpoints itself as it finishes. Besides a line per
    model, `log` gets the count and time left (`climb_assets.core.shared.progress`)."""
    progress = Progress("mixture_evaluation", "model", len(pending))
    if pending:
        log(progress.line(0))

    def log_done(index: int, found: dict, finished: int) -> None:
        job = pending[index]
        log(
            f"evaluation {job.name} seed {job.seed_index} done ({finished} of {len(pending)} "
            f"to train): objective {found['scores']['objective']:.4f}, {found['seconds']:.1f} s"
        )
        log(progress.line(finished))

    try:
        return map_proxy_tasks(trainer, pending, settings, work_dir, log_done)
    except TasksFailed as err:
        names = ", ".join(
            f"{pending[f.index].name} seed {pending[f.index].seed_index}" for f in err.failures
        )
        raise RuntimeError(
            f"evaluation models failed ({names}): {err}. The others are checkpointed; running "
            "the evaluation again trains only what is missing."
        ) from err


def estimate_line(
    settings: Settings, layout: Layout, models: int, mixtures: int, seeds: int
) -> str:
    """How many evaluation models will train, on how many tokens, and for about how long: the
    proxies' measured training speed (iteration runs), scaled by the models' cost per token,
    at the proxies' parallelism. Scoring is left out, so it is a lower bound."""
    tokens = settings.evaluation.tokens
    line = (
        f"mixture_evaluation: {models} model(s) to train (of {mixtures} distinct mixtures x "
        f"{seeds} seed(s)), {tokens:,} tokens each"
    )
    speed = proxy_tokens_per_second(settings, layout)
    if speed is None:
        return line + ", time unknown (no proxy training speed recorded)"
    ratio = _cost_per_token(evaluation_proxy(settings)) / _cost_per_token(settings.proxy)
    at_once = parallel_models(settings)
    seconds = math.ceil(models / at_once) * tokens * ratio / speed
    return (
        f"{line}, about {format_left(seconds)} (proxies trained at {speed:,.0f} tok/s; an "
        f"evaluation model costs {ratio:.1f}x a proxy per token; {at_once} at once)"
    )


def proxy_tokens_per_second(settings: Settings, layout: Layout) -> float | None:
    """The median training speed of the search's proxies, None when none was recorded."""
    try:
        runs = iteration_runs(layout, settings.iterations + 1)
    except MissingArtifact:  # an iteration missing: the evaluation itself says so
        return None
    if runs is None or "train_tokens_per_second" not in runs.columns:
        return None
    speed = runs["train_tokens_per_second"].drop_nulls().median()
    return float(speed) if isinstance(speed, (int, float)) and speed > 0 else None


def parallel_models(settings: Settings) -> int:
    """Models trained at once: the local backend's workers; on Ray, the proxies per iteration
    (the largest), a guess of what its cluster held for the search."""
    from climb_assets.core.shared.execution import local_worker_count
    from climb_assets.core.shared.precision import default_device

    if settings.execution.backend == "ray":
        return max(settings.search.proxies_per_iteration)
    return local_worker_count(settings.execution, settings.proxy.cpu_threads, default_device())


def _cost_per_token(model: ProxySettings) -> float:
    """Multiply-adds per token of a decoder: its blocks (weights and attention over seq_len)
    and the output projection onto the vocabulary."""
    d = model.d_model
    return model.n_layers * (12 * d * d + 2 * model.seq_len * d) + model.vocab_size * d


def evaluation_mixtures(settings: Settings, layout: Layout) -> dict[str, np.ndarray]:
    """The optimal mixture (as the search chose it) and the baselines, by name."""
    from climb_assets.core.search.evaluation import baseline_mixtures
    from climb_assets.core.search.mixtures import build_constraints

    token_counts = corpus_token_counts(layout, settings)
    constraints = build_constraints(token_counts, settings.search, constraint_budget(settings))
    chosen = json.loads(layout.optimal_mixture.read_text())["weights"]
    optimal = np.array([chosen[key] for key in sorted(chosen, key=int)], dtype=float)
    history = iteration_runs(layout, settings.iterations + 1)
    if history is None:
        raise dg.Failure("mixture_evaluation needs at least one bootstrap iteration")
    columns = sorted((c for c in history.columns if c.startswith("w_")), key=lambda c: int(c[2:]))
    score = "score" if "score" in history.columns else "objective"
    return baseline_mixtures(
        optimal,
        history.select(columns).to_numpy(),
        history[score].to_numpy(),
        token_counts,
        constraints,
        settings.seed,
    )


def evaluation_run_key(settings: Settings, layout: Layout) -> str:
    """Everything besides the weights and the seed that decides an evaluation model's scores."""
    parts = [
        evaluation_proxy(settings).model_dump_json(),
        json.dumps(
            [t.model_dump(mode="json") for t in [*settings.targets, *settings.evaluation.targets]],
            sort_keys=True,
        ),
        layout.proxy_pool_manifest.read_text(),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _weights_id(weights: np.ndarray) -> str:
    from climb_assets.core.search.mixtures import mixture_keys

    return hashlib.sha256(mixture_keys(weights)[0]).hexdigest()[:12]


def evaluation_summary(
    settings: Settings,
    mixtures: dict[str, np.ndarray],
    same: dict[str, str | None],
    seeds: list[int],
    runs: pl.DataFrame,
    metrics: list[str],
) -> dict[str, Any]:
    from climb_assets.core.search import evaluation as ev
    from climb_assets.core.search.targets import metric_of

    table = ev.summarize(runs, metrics)
    by_name = {row["mixture"]: row for row in table.iter_rows(named=True)}
    stats = {
        name: ev.Stat(row["n"], row["objective_mean"], row["objective_std"])
        for name, row in by_name.items()
    }
    margins = ev.margins(stats, same, ev.paired_stds(runs))
    return {
        "objective_direction": "higher is better",
        "tokens_per_model": settings.evaluation.tokens,
        "model": evaluation_proxy(settings).model_dump(mode="json"),
        "seeds": seeds,
        "metrics": metrics,
        "order": list(mixtures),  # summary.json sorts its keys; this keeps the table's order
        "headline_metrics": [
            f"{t.name}/{metric_of(t)}" for t in [*settings.targets, *settings.evaluation.targets]
        ],
        "search_targets": [t.name for t in settings.targets],
        "evaluation_targets": [t.name for t in settings.evaluation.targets],
        "mixtures": {
            name: {
                "weights": [float(w) for w in mixtures[name]],
                "same_as": same[name],
                **{k: _finite(v) for k, v in by_name[name].items() if k != "mixture"},
            }
            for name in mixtures
        },
        "margins": [
            {k: _finite(v) if isinstance(v, float) else v for k, v in asdict(m).items()}
            for m in margins
        ],
        CHECK: ev.optimal_beats_baselines(margins),
    }


def report_lines(summary: dict[str, Any]) -> list[str]:
    """What `climb evaluate` prints: mean ± std per mixture, then the optimal's margins."""
    from climb_assets.core.search.evaluation import margins_table, mean_std_table

    table = mean_std_table(summary)
    widths = {c: max(len(c), *(len(str(v)) for v in table[c])) for c in table.columns}
    lines = [
        f"mixture evaluation: {summary['tokens_per_model']:,} tokens per model, "
        f"{len(summary['seeds'])} seed(s), objective higher is better",
        "  ".join(c.ljust(widths[c]) for c in table.columns).rstrip(),
    ]
    lines += [
        "  ".join(str(v).ljust(widths[c]) for c, v in row.items()).rstrip()
        for row in table.to_dicts()
    ]
    lines.append(
        "margin of optimal over each baseline (mean objective difference; spread = the "
        "larger seed std; paired = std of the difference at equal seeds):"
    )
    for m in margins_table(summary["margins"]).iter_rows(named=True):
        lines.append(
            f"  {m['baseline']:<14} {m['margin']:>10}  spread {m['± seeds']:>8}  "
            f"paired {m['± paired']:>8}  {m['verdict']}"
        )
    lines.append(f"{CHECK}: {'passed' if summary[CHECK] else 'failed'}")
    return lines


# Score columns that count what was scored (examples, bytes, tokens) rather than how well.
_BOOKKEEPING = ("examples", "bytes", "tokens")


def _is_metric(column: str) -> bool:
    return "/" in column and column.rsplit("/", 1)[1] not in _BOOKKEEPING


def _finite(value: Any) -> Any:
    """NaN (an std over one seed) as None, so summary.json stays valid JSON."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _readable(value: float | None) -> float:
    """Rounded to 4 significant digits, NaN when missing: a float the Plots tab can chart."""
    rounded = None if value is None else round_for_reading(float(value))
    return math.nan if rounded is None else rounded
