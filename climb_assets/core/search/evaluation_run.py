"""The evaluation, start to end: plan a model per (distinct mixture, seed), resume the finished
ones from their checkpoints, train the rest, and assemble the runs, loss curves and summary.

Imported by the Dagster definitions, which every step process loads: what pulls in LightGBM
(`core.search.evaluation`, through the strategy) is imported where it is used.

Like `bootstrap.run_round`, it reads nothing from the artifact store and writes nothing but the
per-model checkpoints: the caller hands in what the search produced (`EvaluationInputs`) and
writes the returned `Evaluation`, so the same run works under Dagster, in a script or a test.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from climb_assets.core.search.proxy_jobs import EvaluationJob, EvaluationTrainer, absolute_targets
from climb_assets.core.shared.execution import TasksFailed, map_proxy_tasks
from climb_assets.core.shared.progress import Progress, format_left
from climb_assets.settings import ProxySettings, Settings

Log = Callable[[str], None]
CHECK = "optimal_beats_baselines"
# Score columns that count what was scored (examples, bytes, tokens) rather than how well.
_BOOKKEEPING = ("examples", "bytes", "tokens")


@dataclass(frozen=True)
class EvaluationInputs:
    """What the evaluation reads from the search: the chosen mixture, every proxy run, the
    super-clusters' token counts and the proxy pool; `work_dir` keeps per-model checkpoints."""

    optimal: np.ndarray
    history: pl.DataFrame  # every bootstrap iteration's runs (w_<i> columns, score, speed)
    token_counts: dict[int, int]
    constraint_budget: int  # tokens the caps are computed against (`constraint_budget`)
    pool_dir: Path
    pool_manifest: str  # the pool's manifest text: part of every model's run key
    work_dir: Path


@dataclass
class Evaluation:
    runs: pl.DataFrame  # mixture, same_as, seed_index, seed, objective, metrics, ...
    curves: pl.DataFrame
    summary: dict[str, Any]  # what summary.json holds


def evaluation_proxy(settings: Settings) -> ProxySettings:
    """The evaluation model: the proxy's recipe at the evaluation's size and token count."""
    e = settings.evaluation
    return settings.proxy.model_copy(
        update={
            "d_model": e.d_model,
            "n_layers": e.n_layers,
            "n_heads": e.n_heads,
            "tokens_per_proxy": e.tokens,
        }
    )


def run_evaluation(
    settings: Settings,
    inputs: EvaluationInputs,
    identity: Mapping[str, str],
    log: Log = print,
    announce: Log | None = None,
) -> Evaluation:
    """Train the optimal mixture and the baselines on every seed (resuming finished models) and
    return the runs, curves and summary (with `identity`, what the search was built on).
    `announce` (by default `log`) gets how many models will train and for about how long."""
    mixtures = evaluation_mixtures(settings, inputs)
    trained = train_mixtures(
        settings,
        mixtures,
        inputs.pool_dir,
        inputs.pool_manifest,
        inputs.work_dir,
        log,
        announce,
        proxy_tokens_per_second(inputs.history),
    )
    runs = trained.runs
    metrics = ["objective", *sorted(k for k in runs.columns if _is_metric(k))]
    same, seeds = trained.same, trained.seeds
    summary = evaluation_summary(settings, mixtures, same, seeds, runs, metrics) | dict(identity)
    return Evaluation(runs, trained.curves, summary)


@dataclass
class TrainedMixtures:
    runs: pl.DataFrame  # one row per (mixture, seed): mixture, same_as, seed_index, seed, ...
    curves: pl.DataFrame
    seeds: list[int]
    same: dict[str, str | None]  # a mixture equal to an earlier one: that one's name


def train_mixtures(
    settings: Settings,
    mixtures: Mapping[str, np.ndarray],
    pool_dir: Path,
    pool_manifest: str,
    work_dir: Path,
    log: Log = print,
    announce: Log | None = None,
    proxy_speed: float | None = None,
) -> TrainedMixtures:
    """Every distinct mixture as an evaluation model on each of the evaluation's seeds (common
    random numbers), each checkpointed under `work_dir` by its weights and seed: a finished
    one is read back, so a rerun trains only what is missing. `proxy_speed` (tokens/s of
    the search's proxies) makes `announce`'s time estimate."""
    from climb_assets.core.search import evaluation as ev  # LightGBM, via the strategy

    same = ev.same_as(mixtures)
    seeds = ev.evaluation_seeds(settings.seed, settings.evaluation.seeds)
    trainer = _trainer(settings, pool_dir, pool_manifest)
    distinct = [name for name in mixtures if same[name] is None]
    jobs = [
        EvaluationJob(
            name,
            index,
            seed,
            tuple(map(float, mixtures[name])),
            (work_dir / f"{_weights_id(mixtures[name])}-seed{seed}.json").resolve(),
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
        line = estimate_line(settings, len(pending), len(distinct), len(seeds), proxy_speed)
        (announce or log)(line)
    trained = _train_evaluation(trainer, pending, settings, work_dir.resolve(), log)
    for job, found in zip(pending, trained, strict=True):
        done[(job.name, job.seed_index)] = found
    runs, curves = _tables(mixtures, same, seeds, done)
    return TrainedMixtures(runs, curves, seeds, same)


def _trainer(settings: Settings, pool_dir: Path, pool_manifest: str) -> EvaluationTrainer:
    search_targets = absolute_targets(settings.targets)
    extra_targets = absolute_targets(settings.evaluation.targets)
    clash = {t.name for t in search_targets} & {t.name for t in extra_targets}
    if clash:
        raise ValueError(f"evaluation.targets reuse search target names {sorted(clash)}")
    return EvaluationTrainer(
        evaluation_proxy(settings),
        pool_dir.resolve(),
        (*search_targets, *extra_targets),
        len(search_targets),
        evaluation_run_key(settings, pool_manifest),
    )


def _tables(
    mixtures: Mapping[str, np.ndarray],
    same: Mapping[str, str | None],
    seeds: list[int],
    done: Mapping[tuple[str, int], dict],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One row per (mixture, seed), a mixture equal to another reusing its models' results."""
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
            speed = {k: found[k] for k in ("final_train_loss", "train_tokens_per_second")}
            rows.append(base | ordered | speed)
            curves += [base | {"tokens": t, "loss": v} for t, v in found["curve"]]
    runs = pl.DataFrame(rows, schema_overrides={"same_as": pl.String}, infer_schema_length=None)
    return runs, pl.DataFrame(curves, schema_overrides={"same_as": pl.String})


def _train_evaluation(
    trainer: EvaluationTrainer,
    pending: list[EvaluationJob],
    settings: Settings,
    work_dir: Path,
    log: Log,
) -> list[dict]:
    """Train the unfinished evaluation models, as many at once as the proxies' backend allows
    (local worker processes or Ray); each checkpoints itself as it finishes. Besides a line per
    model, `log` gets the count and time left (`climb_assets.core.shared.progress`)."""
    if not pending:
        return []
    progress = Progress("mixture_evaluation", "model", len(pending))
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
    settings: Settings, models: int, mixtures: int, seeds: int, speed: float | None
) -> str:
    """How many evaluation models will train, on how many tokens, and for about how long: the
    proxies' measured training speed (`speed`, tokens/s), scaled by the models' cost per
    token, at the proxies' parallelism. Scoring is left out, so it is a lower bound."""
    tokens = settings.evaluation.tokens
    line = (
        f"mixture_evaluation: {models} model(s) to train (of {mixtures} distinct mixtures x "
        f"{seeds} seed(s)), {tokens:,} tokens each"
    )
    if speed is None:
        return line + ", time unknown (no proxy training speed recorded)"
    ratio = cost_per_token(evaluation_proxy(settings)) / cost_per_token(settings.proxy)
    at_once = parallel_models(settings)
    seconds = math.ceil(models / at_once) * tokens * ratio / speed
    return (
        f"{line}, about {format_left(seconds)} (proxies trained at {speed:,.0f} tok/s; an "
        f"evaluation model costs {ratio:.1f}x a proxy per token; {at_once} at once)"
    )


def proxy_tokens_per_second(history: pl.DataFrame | None) -> float | None:
    """The median training speed of the search's proxies, None when none was recorded."""
    if history is None or "train_tokens_per_second" not in history.columns:
        return None
    speed = history["train_tokens_per_second"].drop_nulls().median()
    return float(speed) if isinstance(speed, (int, float)) and speed > 0 else None


def parallel_models(settings: Settings) -> int:
    """Models trained at once: the local backend's workers; on Ray, the proxies per iteration
    (the largest), a guess of what its cluster held for the search."""
    from climb_assets.core.shared.execution import local_worker_count
    from climb_assets.core.shared.precision import default_device

    if settings.execution.backend == "ray":
        return max(settings.search.proxies_per_iteration)
    return local_worker_count(settings.execution, settings.proxy.cpu_threads, default_device())


def cost_per_token(model: ProxySettings) -> float:
    """Multiply-adds per token of a decoder: its blocks (weights and attention over seq_len)
    and the output projection onto the vocabulary."""
    d = model.d_model
    return model.n_layers * (12 * d * d + 2 * model.seq_len * d) + model.vocab_size * d


def evaluation_mixtures(settings: Settings, inputs: EvaluationInputs) -> dict[str, np.ndarray]:
    """The optimal mixture (as the search chose it) and the baselines, by name."""
    from climb_assets.core.search import evaluation as ev  # LightGBM, via the strategy
    from climb_assets.core.search.mixtures import build_constraints

    history = inputs.history
    constraints = build_constraints(inputs.token_counts, settings.search, inputs.constraint_budget)
    columns = sorted((c for c in history.columns if c.startswith("w_")), key=lambda c: int(c[2:]))
    score = "score" if "score" in history.columns else "objective"
    return ev.baseline_mixtures(
        inputs.optimal,
        history.select(columns).to_numpy(),
        history[score].to_numpy(),
        inputs.token_counts,
        constraints,
        settings.seed,
    )


def evaluation_run_key(settings: Settings, pool_manifest: str) -> str:
    """Everything besides the weights and the seed that decides an evaluation model's scores."""
    parts = [
        evaluation_proxy(settings).model_dump_json(),
        json.dumps(
            [t.model_dump(mode="json") for t in [*settings.targets, *settings.evaluation.targets]],
            sort_keys=True,
        ),
        pool_manifest,
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
    """summary.json: the model and targets, mean ± std per mixture, the optimal's margins."""
    from climb_assets.core.search import evaluation as ev  # LightGBM, via the strategy
    from climb_assets.core.search.targets import metric_of

    table = ev.summarize(runs, metrics)
    by_name = {row["mixture"]: row for row in table.iter_rows(named=True)}
    stats = {
        name: ev.Stat(row["n"], row["objective_mean"], row["objective_std"])
        for name, row in by_name.items()
    }
    margins = ev.margins(stats, same, ev.paired_stds(runs))
    targets = [*settings.targets, *settings.evaluation.targets]
    return {
        "objective_direction": "higher is better",
        "tokens_per_model": settings.evaluation.tokens,
        "model": evaluation_proxy(settings).model_dump(mode="json"),
        "seeds": seeds,
        "metrics": metrics,
        "order": list(mixtures),  # summary.json sorts its keys; this keeps the table's order
        "headline_metrics": [f"{t.name}/{metric_of(t)}" for t in targets],
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
    from climb_assets.core.search import evaluation as ev  # LightGBM, via the strategy

    table = ev.mean_std_table(summary)
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
    for m in ev.margins_table(summary["margins"]).iter_rows(named=True):
        lines.append(
            f"  {m['baseline']:<14} {m['margin']:>10}  spread {m['± seeds']:>8}  "
            f"paired {m['± paired']:>8}  {m['verdict']}"
        )
    lines.append(f"{CHECK}: {'passed' if summary[CHECK] else 'failed'}")
    return lines


def _is_metric(column: str) -> bool:
    return "/" in column and column.rsplit("/", 1)[1] not in _BOOKKEEPING


def _finite(value: Any) -> Any:
    """NaN (an std over one seed) as None, so summary.json stays valid JSON."""
    return None if isinstance(value, float) and math.isnan(value) else value
