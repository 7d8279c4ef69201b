"""The search's last word: a race among a few finalists on fresh seeds.

Every search proxy trains with one seed (common random numbers), so the predictor, and the
best observed run, are tuned to that seed's noise: a mixture can lead by luck of the seed (for
example slivers spread over many super-clusters that score best at that seed only). Near the
optimum the finalists differ by less than that noise, so the last choice is made on seeds the
search never saw: the predictor's choice, the best observed run and the best single
super-cluster within the caps (that super-cluster at its cap, the rest on the next best) each
train `seeds` more proxies, every finalist on the same seeds, and the best mean wins. None of
these seeds decided how a finalist was chosen, so the means carry no selection bias.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from climb_assets.core.search.mixtures import (
    MixtureConstraints,
    best_single_mixture,
    mixture_keys,
)
from climb_assets.core.search.proxy_jobs import ProxyJob, ProxyTrainer
from climb_assets.settings import Settings

Log = Callable[[str], None]
# Listed in this order; on equal means the earlier finalist wins.
FINALIST_NAMES = ("predicted", "best_observed", "best_single")
RACE_SCHEMA = {
    "finalist": pl.String,
    "candidate_id": pl.Int64,
    "repeat": pl.Int64,
    "objective": pl.Float64,
}


@dataclass(frozen=True)
class Finalist:
    name: str
    weights: np.ndarray  # (k,)
    same_as: str | None = None  # an earlier finalist with the same mixture (raced once)


@dataclass
class RaceResult:
    finalists: list[Finalist]
    runs: pl.DataFrame  # one row per distinct finalist and seed (RACE_SCHEMA)
    winner: Finalist

    def standings(self) -> pl.DataFrame:
        """finalist, raced_as (itself or its earlier twin), mean and std of the objective over
        the race's seeds, seeds, winner."""
        stats = self.runs.group_by("finalist").agg(
            pl.col("objective").mean().alias("mean"),
            pl.col("objective").std().alias("std"),
            pl.len().alias("seeds"),
        )
        names = pl.DataFrame(
            {
                "finalist": [f.name for f in self.finalists],
                "raced_as": [f.same_as or f.name for f in self.finalists],
            }
        )
        return (
            names.join(stats, left_on="raced_as", right_on="finalist", how="left")
            .with_columns(pl.col("finalist").eq(self.winner.name).alias("winner"))
            .select("finalist", "raced_as", "mean", "std", "seeds", "winner")
        )

    def seed_noise(self) -> float | None:
        """Standard deviation of one proxy's objective under a change of seed, pooled over the
        distinct finalists (each trained on the race's seeds, at the full budget); None when
        the race had a single seed."""
        spread = (
            self.runs.group_by("finalist")
            .agg(pl.col("objective").var().alias("variance"), (pl.len() - 1).alias("dof"))
            .filter(pl.col("dof") > 0)
        )
        if spread.height == 0:
            return None
        pooled = (spread["variance"] * spread["dof"]).sum() / spread["dof"].sum()
        return float(np.sqrt(pooled))


def finalists(
    predicted: np.ndarray,
    observed_weights: np.ndarray,
    observed_scores: np.ndarray,
    constraints: MixtureConstraints,
) -> list[Finalist]:
    """The predictor's choice, the best observed run and the best single super-cluster within
    the caps (higher scores are better); a mixture equal to an earlier one says so."""
    weights = np.atleast_2d(np.asarray(observed_weights, dtype=float))
    scores = np.asarray(observed_scores, dtype=float)
    mixtures = {
        "predicted": np.asarray(predicted, dtype=float),
        "best_observed": weights[int(np.argmax(scores))],
        "best_single": best_single_mixture(weights, scores, constraints),
    }
    found: list[Finalist] = []
    first: dict[bytes, str] = {}  # the evaluation's notion of "the same mixture"
    for name in FINALIST_NAMES:
        key = mixture_keys(mixtures[name])[0]
        found.append(Finalist(name, mixtures[name], first.get(key)))
        first.setdefault(key, name)
    return found


def race_winner(names: Sequence[str], scores: np.ndarray) -> int:
    """Index of the best mean over the seeds (rows: finalists, columns: seeds); the earliest
    wins a tie, so the predictor's choice keeps its place unless another does better."""
    means = np.asarray(scores, dtype=float).mean(axis=1)
    if len(means) != len(names) or not np.isfinite(means).all():
        raise ValueError(f"race scores for {list(names)} are missing or not finite: {means}")
    return int(np.argmax(means))


def run_race(
    entrants: list[Finalist],
    seeds: int,
    first_candidate_id: int,
    trainer: ProxyTrainer,
    settings: Settings,
    log: Log,
    warn: Log,
) -> RaceResult:
    """Train each distinct finalist with seed repeats 1..`seeds` (the search's own proxies used
    repeat 0) and pick the best mean. Finished proxies are checkpointed by `trainer`, so an
    interrupted race resumes. Candidate ids start at `first_candidate_id`, after the search's."""
    # Here, not at the top: the bootstrap pulls in LightGBM, which describing a race needs not.
    from climb_assets.core.search.bootstrap import train_proxies

    if seeds < 1:
        raise ValueError(f"a race needs at least one seed, got {seeds}")
    raced = [f for f in entrants if f.same_as is None]
    ids = {f.name: first_candidate_id + index for index, f in enumerate(raced)}
    jobs = [
        ProxyJob(ids[f.name], tuple(map(float, f.weights)), repeat)
        for f in raced
        for repeat in range(1, seeds + 1)
    ]
    done, _ = train_proxies(trainer, jobs, settings, log, warn, "final race")
    by_id = {ids[f.name]: f.name for f in raced}
    runs = pl.DataFrame(
        [
            {
                "finalist": by_id[job.candidate_id],
                "candidate_id": job.candidate_id,
                "repeat": job.repeat,
                "objective": done[job]["row"]["objective"],
            }
            for job in jobs
        ],
        schema=RACE_SCHEMA,
    )
    scores = runs["objective"].to_numpy().reshape(len(raced), seeds)  # jobs: finalist-major
    winner = raced[race_winner([f.name for f in raced], scores)]
    return RaceResult(entrants, runs, winner)


def describe_standings(standings: list[dict]) -> str:
    """One line for people: each finalist's mean ± std over the race's seeds, the winner first
    (`standings` as written by `RaceResult.standings().to_dicts()`)."""
    parts = []
    for row in sorted(standings, key=lambda r: not r["winner"]):
        if row["raced_as"] != row["finalist"]:
            parts.append(f"{row['finalist']} = {row['raced_as']}")
            continue
        std = "n/a" if row["std"] is None else f"{row['std']:.3f}"
        parts.append(f"{row['finalist']} {row['mean']:.4f} ± {std}")
    seeds = max((row["seeds"] or 0) for row in standings)
    return f"final race on {seeds} fresh seeds (winner first): " + "; ".join(parts)
