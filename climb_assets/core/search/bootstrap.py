"""One CLIMB bootstrap round, start to end: plan the candidates, train and score a proxy on
each, fit the predictor on every run so far.

Each proxy is checkpointed by the `ProxyTrainer` as it finishes, so a round that was
interrupted resumes where it stopped and trains only what is missing. Progress goes to logging
callbacks and failures raise plain exceptions, so the same round runs under Dagster (which
writes the result and turns it into metadata), in a script or in a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from climb_assets.core.search.halving import (
    Halving,
    estimate_full_objectives,
    halving_plan,
    kept_candidates,
    repeats_among_kept,
)
from climb_assets.core.search.predictor import spearman
from climb_assets.core.search.proxy_jobs import (
    CURVE_SCHEMA,
    ProxyJob,
    ProxyTrainer,
    canonical_run_row,
)
from climb_assets.core.search.strategy import (
    REPEAT_SCHEMA,
    IterationPlan,
    IterationPredictor,
    TokenCounts,
    fit_iteration_predictor,
    iteration_seed,
    plan_iteration,
    seed_noise,
)
from climb_assets.core.shared.execution import TasksFailed, map_proxy_tasks
from climb_assets.core.shared.progress import Progress
from climb_assets.settings import Settings

Log = Callable[[str], None]
# Random stream of the predictor fitted at the end of a round (the plan's own uses another).
_ROUND_PREDICTOR_STREAM = 7


class ProxiesFailed(RuntimeError):
    """Some proxies of the round failed; every other one is checkpointed, so running the round
    again trains only the failed ones."""


@dataclass
class RoundResult:
    """What one round produced: the tables and predictor it writes, and numbers to report."""

    iteration: int
    plan: IterationPlan
    runs: pl.DataFrame  # the plan's candidates with their metrics, objective and score
    curves: pl.DataFrame  # loss curves of the first-seed runs (CURVE_SCHEMA)
    repeats: pl.DataFrame  # candidates re-run with a second seed (REPEAT_SCHEMA)
    fitted: IterationPredictor  # fitted on every run so far, this round's included
    summary: dict  # JSON-able numbers of the round
    trained: list[dict]  # results of the proxies trained by this call (resumed ones excluded)

    @property
    def workers(self) -> list[str]:
        """host:pid of the processes that trained this call's proxies."""
        return sorted({f"{d['worker']['host']}:{d['worker']['pid']}" for d in self.trained})


def run_round(
    iteration: int,
    history: pl.DataFrame | None,
    token_counts: TokenCounts,
    budget_tokens: int,
    settings: Settings,
    trainer: ProxyTrainer,
    log: Log,
    warn: Log | None = None,
    label: str | None = None,
) -> RoundResult:
    """Round `iteration` (1-based) after the scored runs of the earlier rounds (`history`, None
    for the first); higher objectives are better.

    `trainer` trains and checkpoints one proxy (its work_dir holds the checkpoints); `log` and
    `warn` receive progress and retried workers, prefixed with `label`. `budget_tokens` is the
    constraint budget of the caps (see `build_constraints`). Raises ProxiesFailed when some
    proxies failed, ExecutionError when the configured execution cannot run."""
    label = label or f"iteration {iteration}"
    if len(token_counts) < 2:  # every candidate would be the same mixture
        raise ValueError(
            f"{len(token_counts)} super-cluster(s) to mix: the search needs at least 2; lower "
            f"clustering.merge_distance ({settings.clustering.merge_distance}) or set "
            "clustering.target_super_clusters, then rematerialize super_clusters"
        )
    plan = plan_iteration(
        iteration,
        history,
        token_counts,
        settings.search,
        budget_tokens,
        settings.seed,
        maximize=True,
        predictor_settings=settings.predictor,
    )
    candidates = plan.to_frame(0 if history is None else history.height)
    ids = candidates["candidate_id"].to_list()
    firsts = [
        ProxyJob(cid, tuple(map(float, w)), 0) for cid, w in zip(ids, plan.weights, strict=True)
    ]
    trained = _RoundProxies(trainer, settings, log, warn or log, label)
    halving = halving_plan(len(firsts), settings.search, settings.proxy)
    if halving is None:
        repeat_at = [int(i) for i in plan.repeats]
        done = trained.run(firsts + [_repeat(firsts[i]) for i in repeat_at])
        first_done = [done[job] for job in firsts]
        rung = None
    else:
        first_done, repeat_at, rung = _halve(trained, firsts, plan, halving, log, label)
        done = trained.done
    first_runs = [canonical_run_row({**d["row"], "repeat": 0}) for d in first_done]
    rows = first_runs + [
        canonical_run_row({**done[_repeat(firsts[i])]["row"], "repeat": 1}) for i in repeat_at
    ]
    curves = [{c: point[c] for c in CURVE_SCHEMA} for d in first_done for point in d["curve"]]
    scored = candidates.join(
        pl.DataFrame(first_runs).drop("repeat"), on="candidate_id", maintain_order="left"
    )
    if rung is not None:
        scored = _with_estimates(scored, *rung, history)
    scored = scored.with_columns(pl.col("objective").alias("score"))
    repeats = repeat_table(rows, iteration)
    everything = scored if history is None else pl.concat([history, scored], how="diagonal")
    fitted = fit_iteration_predictor(
        everything,
        settings.search,
        iteration_seed(settings.seed, iteration, _ROUND_PREDICTOR_STREAM),
        maximize=True,
        predictor_settings=settings.predictor,
    )
    return RoundResult(
        iteration=iteration,
        plan=plan,
        runs=scored,
        curves=pl.DataFrame(curves, schema=CURVE_SCHEMA),
        repeats=repeats,
        fitted=fitted,
        summary=round_summary(iteration, plan, scored, repeats, fitted),
        trained=list(trained.fresh.values()),
    )


def _repeat(job: ProxyJob) -> ProxyJob:
    return ProxyJob(job.candidate_id, job.weights, 1)


@dataclass
class _RoundProxies:
    """Trains a round's proxies in one or more batches, collecting every result (`done`) and
    those this call trained (`fresh`)."""

    trainer: ProxyTrainer
    settings: Settings
    log: Log
    warn: Log
    label: str
    done: dict[ProxyJob, dict] = field(default_factory=dict)
    fresh: dict[ProxyJob, dict] = field(default_factory=dict)

    def run(self, jobs: list[ProxyJob], label: str | None = None) -> dict[ProxyJob, dict]:
        done, fresh = train_proxies(
            self.trainer, jobs, self.settings, self.log, self.warn, label or self.label
        )
        self.done.update(done)
        self.fresh.update(fresh)
        return done


def _halve(
    trained: _RoundProxies,
    firsts: list[ProxyJob],
    plan: IterationPlan,
    halving: Halving,
    log: Log,
    label: str,
) -> tuple[list[dict], list[int], tuple[np.ndarray, np.ndarray]]:
    """Successive halving: every candidate to its rung, then the best `halving.keep` (and the
    seed repeats, chosen among them) to the full budget. Returns each candidate's result (the
    rung's for a stopped one), the repeated candidates, and the rung objectives with the mask
    of stopped candidates."""
    rung_jobs = [job.at_rung(halving.stop_after, halving.target_share) for job in firsts]
    at_rung = trained.run(rung_jobs, f"{label} (rungs)")
    rung_objectives = np.array([at_rung[job]["row"]["objective"] for job in rung_jobs])
    for job, value in zip(rung_jobs, rung_objectives, strict=True):
        if not np.isfinite(value):
            raise ValueError(
                f"{label}: candidate {job.candidate_id} at its rung: score {value} is not finite"
            )
    kept = kept_candidates(rung_objectives, halving.keep)
    repeat_at = repeats_among_kept(plan.repeats, kept, len(plan.repeats))
    log(
        f"{label}: {len(kept)} of {len(firsts)} candidates go on from their rung "
        f"({halving.rung_tokens:,} tokens, scored on {halving.target_share:.0%} of each target) "
        f"to the full budget; the other {len(firsts) - len(kept)} keep an estimated objective"
    )
    stopped = np.ones(len(firsts), dtype=bool)
    stopped[kept] = False
    for index in np.flatnonzero(stopped):  # never resumed: free the disk
        trained.trainer.rung_state(firsts[index], halving.stop_after).unlink(missing_ok=True)
    # Seed repeats first: they train from scratch, the longest jobs go first.
    full = trained.run([_repeat(firsts[i]) for i in repeat_at] + [firsts[i] for i in sorted(kept)])
    results = [
        at_rung[rung_jobs[index]] if stopped[index] else full[job]
        for index, job in enumerate(firsts)
    ]
    return results, repeat_at, (rung_objectives, stopped)


def _with_estimates(
    scored: pl.DataFrame,
    rung_objectives: np.ndarray,
    stopped: np.ndarray,
    history: pl.DataFrame | None,
) -> pl.DataFrame:
    """`scored` with `rung_objective` and `estimated`, the stopped candidates' objective
    replaced by its full-budget estimate from the finished runs of this and earlier rounds."""
    scored = scored.with_columns(
        pl.Series("rung_objective", rung_objectives, dtype=pl.Float64),
        pl.Series("estimated", stopped, dtype=pl.Boolean),
    )
    finished = scored.filter(~pl.col("estimated"))
    worst_finished = float(finished["objective"].min())  # this round's: before adding earlier
    if history is not None and {"rung_objective", "estimated"} <= set(history.columns):
        earlier = history.filter(~pl.col("estimated") & pl.col("rung_objective").is_not_null())
        finished = pl.concat([earlier, finished], how="diagonal")
    estimates = estimate_full_objectives(
        rung_objectives[stopped],
        finished["rung_objective"].to_numpy(),
        finished["objective"].to_numpy(),
        worst_finished,
    )
    objective = scored["objective"].to_numpy().copy()
    objective[stopped] = estimates
    return scored.with_columns(pl.Series("objective", objective, dtype=pl.Float64))


def round_summary(
    iteration: int,
    plan: IterationPlan,
    scored: pl.DataFrame,
    repeats: pl.DataFrame,
    fitted: IterationPredictor,
) -> dict:
    """The round's numbers: proxies, predictor quality, best score, and the noise among them."""
    noise = seed_noise(repeats["score"].to_numpy(), repeats["repeat_score"].to_numpy())
    spread = fitted.predictor.predict_spread(plan.weights)
    return {
        "iteration": iteration,
        "proxies": scored.height,
        "repeated": repeats.height,
        "cv_spearman": None if np.isnan(fitted.cv_spearman) else fitted.cv_spearman,
        "predictor_rows": fitted.n_rows,
        "predictor_rounds": fitted.predictor.info.get("rounds"),
        "best_score": float(scored["score"].max()),
        "stopped_at_rung": int(scored["estimated"].sum()) if "estimated" in scored.columns else 0,
        "rung_spearman": rung_spearman(scored),
        "score_spread": float(scored["score"].std()) if scored.height > 1 else None,
        "seed_noise": None if np.isnan(noise) else noise,
        "predictor_spread": float(spread.mean()),
        "objective_direction": "higher is better",
    }


def rung_spearman(scored: pl.DataFrame) -> float | None:
    """How well the rung ranked the candidates that went on, by their full-budget objective
    (Spearman; None without halving or with fewer than 3 of them). Only the kept ones have both,
    so this understates the rung's ranking over the whole round."""
    if "estimated" not in scored.columns:
        return None
    finished = scored.filter(~pl.col("estimated"))
    if finished.height < 3:
        return None
    value = spearman(finished["rung_objective"].to_numpy(), finished["objective"].to_numpy())
    return None if np.isnan(value) else float(value)


def repeat_table(rows: list[dict], iteration: int) -> pl.DataFrame:
    """candidate_id, iteration, score (first seed), repeat_score (second seed)."""
    first = {row["candidate_id"]: row["objective"] for row in rows if row["repeat"] == 0}
    pairs = [
        {
            "candidate_id": row["candidate_id"],
            "iteration": iteration,
            "score": first[row["candidate_id"]],
            "repeat_score": row["objective"],
        }
        for row in rows
        if row["repeat"] > 0
    ]
    return pl.DataFrame(pairs, schema=REPEAT_SCHEMA)


def train_proxies(
    trainer: ProxyTrainer,
    jobs: list[ProxyJob],
    settings: Settings,
    log: Log,
    warn: Log,
    label: str,
) -> tuple[dict[ProxyJob, dict], dict[ProxyJob, dict]]:
    """(every job's result, the results trained by this call) for proxies that train and score
    one candidate each.

    Every candidate gets the same seed (common random numbers); repeat 1 is the re-run with a
    second seed that measures the seed noise. A checkpoint counts only for the same weights,
    proxy settings, targets, seed and pool (the trainer's run key). The unfinished proxies run
    on the configured backend (execution.backend)."""
    finished = {job: trainer.finished(job) for job in jobs}
    for number, job in enumerate(jobs, 1):
        if finished[job] is not None:
            log(f"{label} proxy {number}/{len(jobs)}: resumed from {trainer.checkpoint(job)}")
    pending = [job for job in jobs if finished[job] is None]
    fresh = _train_pending(trainer, pending, settings, log, label)
    _warn_retries(trainer, pending, warn, label)
    done = {**{j: d for j, d in finished.items() if d is not None}, **fresh}
    return done, fresh


def _train_pending(
    trainer: ProxyTrainer, pending: list[ProxyJob], settings: Settings, log: Log, label: str
) -> dict[ProxyJob, dict]:
    """Train the unfinished proxies on the configured backend; each checkpoints itself. Besides
    a line per proxy, `log` gets the count and time left (`climb_assets.core.shared.progress`)."""
    progress = Progress(label, "proxy", len(pending))
    if pending:
        log(progress.line(0))

    def log_done(index: int, done: dict, finished: int) -> None:
        job, worker = pending[index], done["worker"]
        log(
            f"{label} proxy {job.describe()} done ({finished} of {len(pending)} "
            f"to train): objective {done['row']['objective']:.4f}, "
            f"{done['row']['train_tokens_per_second']:.0f} tok/s, {done['seconds']:.1f} s, "
            f"on {worker['host']} pid {worker['pid']}"
        )
        log(progress.line(finished))

    try:
        results = map_proxy_tasks(trainer, pending, settings, trainer.work_dir, log_done)
    except TasksFailed as err:
        names = ", ".join(pending[f.index].describe() for f in err.failures)
        raise ProxiesFailed(
            f"{label}: proxies failed ({names}): {err}. The other proxies are "
            "checkpointed; materializing this iteration again trains only what is missing "
            "(Ray retries a lost worker execution.max_retries = "
            f"{settings.execution.max_retries} times)."
        ) from err
    return dict(zip(pending, results, strict=True))


def _warn_retries(trainer: ProxyTrainer, jobs: list[ProxyJob], warn: Log, label: str) -> None:
    """Say which proxies started more than once: their worker was lost and Ray retried them."""
    for job in jobs:
        attempts = trainer.attempts(job)
        if len(attempts) > 1:
            where = ", then ".join(f"{a['host']} pid {a['pid']}" for a in attempts)
            warn(
                f"{label} proxy {job.describe()}: its worker was lost "
                f"{len(attempts) - 1} time(s) and Ray retried it ({where})"
            )
