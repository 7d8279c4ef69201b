"""One bootstrap iteration's proxies as independent jobs: each trains and scores one candidate
and checkpoints the result, in this process or on any Ray worker that sees the output folder.

A job's checkpoint is its only output, written atomically, so a crash or a lost worker never
leaves a half-written result, and a finished candidate is never trained again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from climb_assets.core.shared.atomic import write_json
from climb_assets.core.shared.execution import worker_identity
from climb_assets.settings import ProxySettings, Settings, TargetSettings

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from climb_assets.core.search.proxy_pool import ProxyPool
    from climb_assets.core.search.targets import LoadedTarget

# How proxies are seeded and scored; part of the checkpoint key, so a change never resumes old
# proxies. v2: multiple-choice targets scored by gold_loss score their gold choices alone.
# v3: rows carry proxy_tokens and checkpoints their stop_after (successive halving's rungs).
PROXY_PROTOCOL = "common-random-numbers-v1/objective-metrics-v3"
# Checkpoints store their keys sorted while fresh rows come in training order; one fixed order
# for both, so a resumed iteration writes the same files as an uninterrupted one.
RUN_ROW_FIRST = ("candidate_id", "repeat", "objective")
CURVE_SCHEMA = {"candidate_id": pl.Int64, "tokens": pl.Int64, "loss": pl.Float64}


@dataclass(frozen=True)
class ProxyJob:
    """Train candidate `candidate_id` on `weights`; repeat 1 is the re-run with a second seed.
    With `stop_after` the proxy stops at that step (a rung of successive halving) and keeps its
    training state, from which the same candidate's full job goes on; it is scored on
    `target_share` of each target (a rung only ranks a round's candidates)."""

    candidate_id: int
    weights: tuple[float, ...]
    repeat: int
    stop_after: int | None = None
    target_share: float = 1.0

    @property
    def name(self) -> str:
        name = f"candidate-{self.candidate_id}"
        name += f"-repeat-{self.repeat}" if self.repeat else ""
        return name + ("-rung" if self.stop_after is not None else "")

    def describe(self) -> str:
        return f"candidate {self.candidate_id}" + (
            f", seed repeat {self.repeat}" if self.repeat else ""
        )

    def at_rung(self, stop_after: int, target_share: float = 1.0) -> ProxyJob:
        return ProxyJob(self.candidate_id, self.weights, self.repeat, stop_after, target_share)


@dataclass(frozen=True)
class ProxyTrainer:
    """Trains one ProxyJob of an iteration and checkpoints it under `work_dir`. Picklable, so
    Ray ships it to workers; they need the output folder at the same path."""

    settings: Settings
    pool_dir: Path
    work_dir: Path
    run_key: str

    def checkpoint(self, job: ProxyJob) -> Path:
        return self.work_dir / f"{job.name}.json"

    def attempts_log(self, job: ProxyJob) -> Path:
        return self.work_dir / f"{job.name}.attempts"

    def rung_state(self, job: ProxyJob, stop_after: int) -> Path:
        """Where the training state of `job` stopped after `stop_after` steps is kept: named by
        everything it depends on, so no other run's state is ever resumed from."""
        key = json.dumps([self.run_key, list(job.weights), job.repeat, stop_after])
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.work_dir / f"candidate-{job.candidate_id}-rung-{digest}.pt"

    def finished(self, job: ProxyJob) -> dict | None:
        done = read_checkpoint(self.checkpoint(job), self.run_key, np.asarray(job.weights))
        if done is None or done.get("stop_after") != job.stop_after:
            return None
        # A checkpoint without target_share predates it and scored the whole targets.
        return done if done.get("target_share", 1.0) == job.target_share else None

    def __call__(self, job: ProxyJob) -> dict:
        from climb_assets.core.search.proxy_training import TrainingState
        from climb_assets.core.search.scoring import train_and_score
        from climb_assets.core.search.strategy import proxy_seed

        self._record_attempt(job)
        pool, tokenizer, targets = _inputs(self.settings, self.pool_dir, self.run_key)
        started = time.perf_counter()
        weights = np.asarray(job.weights)
        resumed_from = self._resumable(job)
        scored = train_and_score(
            self.settings.proxy,
            pool,
            tokenizer,
            targets,
            weights,
            proxy_seed(self.settings.seed, job.repeat),
            objective_only=True,
            stop_after=job.stop_after,
            resume=None if resumed_from is None else TrainingState.load(resumed_from),
            target_share=job.target_share,
        )
        if scored.state is not None:  # saved before the checkpoint that points at it
            scored.state.save(self.rung_state(job, scored.state.step))
        done = {
            "run_key": self.run_key,
            "weights": list(job.weights),
            "stop_after": job.stop_after,
            "target_share": job.target_share,
            "row": {
                "candidate_id": job.candidate_id,
                "repeat": job.repeat,
                **scored.scores,
                "proxy_tokens": scored.summary["tokens_seen"],
                "train_tokens_per_second": scored.summary["tokens_per_second"],
                "final_train_loss": scored.summary["final_loss"],
            },
            "curve": [
                {"candidate_id": job.candidate_id, "tokens": t, "loss": v}
                for t, v in scored.loss_curve
            ],
            "worker": worker_identity(),
            "seconds": time.perf_counter() - started,
        }
        write_json(done, self.checkpoint(job))
        if resumed_from is not None:  # the finished checkpoint replaces it
            resumed_from.unlink(missing_ok=True)
        return done

    def _resumable(self, job: ProxyJob) -> Path | None:
        """The saved state this full job goes on from: its own rung's, when that rung finished."""
        if job.stop_after is not None:
            return None
        rung = self.finished_rung(job)
        if rung is None:
            return None
        state = self.rung_state(job, rung["stop_after"])
        return state if state.exists() else None

    def finished_rung(self, job: ProxyJob) -> dict | None:
        """The checkpoint of the same candidate and seed stopped at its rung, if any."""
        path = self.work_dir / f"{job.name}-rung.json"
        done = read_checkpoint(path, self.run_key, np.asarray(job.weights))
        return done if done is not None and done.get("stop_after") is not None else None

    def _record_attempt(self, job: ProxyJob) -> None:
        """One line per start, so the driver can tell that Ray retried a lost worker."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with self.attempts_log(job).open("a") as log:
            log.write(json.dumps(worker_identity()) + "\n")

    def attempts(self, job: ProxyJob) -> list[dict[str, Any]]:
        path = self.attempts_log(job)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _inputs(
    settings: Settings, pool_dir: Path, run_key: str
) -> tuple[ProxyPool, Tokenizer, list[LoadedTarget]]:
    targets = json.dumps([t.model_dump(mode="json") for t in settings.targets], sort_keys=True)
    return _open_inputs(targets, str(pool_dir), run_key)


@lru_cache(maxsize=2)
def _open_inputs(
    targets_json: str, pool_dir: str, run_key: str
) -> tuple[ProxyPool, Tokenizer, list[LoadedTarget]]:
    """The pool, tokenizer and targets, opened once per worker process for every proxy it
    trains. Keyed by value (settings are not hashable) and by the run key, which changes with
    the pool's manifest, so a rebuilt pool is opened afresh."""
    from climb_assets.core.search.proxy_pool import ProxyPool
    from climb_assets.core.search.targets import load_target

    pool = ProxyPool.open(Path(pool_dir))
    targets = [TargetSettings.model_validate(t) for t in json.loads(targets_json)]
    return pool, pool.tokenizer(), [load_target(t) for t in targets]


def absolute_targets(targets: list[TargetSettings]) -> list[TargetSettings]:
    """`targets` with their paths resolved against this process's directory: a worker's
    working directory need not be this process's."""
    return [t.model_copy(update={"path": t.path.resolve()}) for t in targets]


def with_absolute_target_paths(settings: Settings) -> Settings:
    """`settings` with its targets' paths resolved against this process's directory."""
    return settings.model_copy(update={"targets": absolute_targets(settings.targets)})


def canonical_run_row(row: dict) -> dict:
    """candidate_id, repeat, objective, then every other key in sorted order."""
    first = {k: row[k] for k in RUN_ROW_FIRST if k in row}
    return first | {k: row[k] for k in sorted(row) if k not in first}


def proxy_run_key(settings: Settings, pool_dir: Path) -> str:
    """Everything besides the weights that decides a proxy's scores (the pool: by its
    manifest)."""
    parts = [
        PROXY_PROTOCOL,
        settings.proxy.model_dump_json(),
        json.dumps([t.model_dump(mode="json") for t in settings.targets], sort_keys=True),
        str(settings.seed),
        (pool_dir / "manifest.json").read_text(),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def read_checkpoint(path: Path, run_key: str, weights: np.ndarray) -> dict | None:
    if not path.exists():
        return None
    done = json.loads(path.read_text())
    same = done.get("run_key") == run_key and np.allclose(done.get("weights"), weights, atol=1e-12)
    return done if same else None


@dataclass(frozen=True)
class EvaluationJob:
    """Train mixture `name` (weights) as an evaluation model with seed `seed`; its checkpoint
    is `checkpoint` (named by the weights, so equal mixtures share it)."""

    name: str
    seed_index: int
    seed: int
    weights: tuple[float, ...]
    checkpoint: Path


@dataclass(frozen=True)
class EvaluationTrainer:
    """Trains one EvaluationJob and checkpoints it. Picklable like ProxyTrainer, so the local
    backend's worker processes (or Ray) train several evaluation models at once. The search
    targets (the first `search_targets` of `targets`) define the objective; the others are
    evaluation-only columns."""

    proxy: ProxySettings
    pool_dir: Path
    targets: tuple[TargetSettings, ...]
    search_targets: int
    run_key: str

    def finished(self, job: EvaluationJob) -> dict | None:
        return read_checkpoint(job.checkpoint, self.run_key, np.asarray(job.weights))

    def __call__(self, job: EvaluationJob) -> dict:
        from climb_assets.core.search.scoring import train_and_score
        from climb_assets.core.search.targets import objective

        targets_json = json.dumps([t.model_dump(mode="json") for t in self.targets])
        pool, tokenizer, loaded = _open_inputs(targets_json, str(self.pool_dir), self.run_key)
        started = time.perf_counter()
        weights = np.asarray(job.weights)
        scored = train_and_score(self.proxy, pool, tokenizer, loaded, weights, job.seed)
        scores = {
            **scored.scores,
            "objective": objective(scored.scores, loaded[: self.search_targets]),
        }
        found = {
            "run_key": self.run_key,
            "weights": list(job.weights),
            "scores": scores,
            "final_train_loss": scored.summary["final_loss"],
            "train_tokens_per_second": scored.summary["tokens_per_second"],
            "curve": [[t, v] for t, v in scored.loss_curve],
        }
        write_json(found, job.checkpoint)
        return found | {"seconds": time.perf_counter() - started}
