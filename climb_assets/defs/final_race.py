"""The Dagster side of the search's end: the final race run with a step's logs and failures,
and the race's and the rounds' noise as `optimal_mixture` shows them.
"""

from typing import TYPE_CHECKING

import dagster as dg
import polars as pl

from climb_assets.core.search.proxy_jobs import (
    ProxyTrainer,
    proxy_run_key,
    with_absolute_target_paths,
)
from climb_assets.core.shared.execution import ExecutionError
from climb_assets.defs.metadata import table
from climb_assets.settings import Settings
from climb_assets.store import Layout, seed_repeats

if TYPE_CHECKING:
    from climb_assets.core.search.final_race import RaceResult
    from climb_assets.core.search.mixtures import MixtureConstraints
    from climb_assets.core.search.strategy import OptimalMixture


def final_race(
    context: dg.AssetExecutionContext,
    settings: Settings,
    layout: Layout,
    best: "OptimalMixture",
    history: pl.DataFrame,
    constraints: "MixtureConstraints",
) -> "RaceResult | None":
    """Race the predictor's choice against the best observed run and the best single
    super-cluster on fresh seeds (None when search.final_race_seeds is 0). Its proxies are
    checkpointed under layout.final_race_work until the result is written."""
    from climb_assets.core.search.bootstrap import ProxiesFailed
    from climb_assets.core.search.final_race import finalists, run_race
    from climb_assets.core.search.strategy import scored_runs

    seeds = settings.search.final_race_seeds
    if seeds == 0:
        return None
    entrants = finalists(
        best.weights,
        *scored_runs(history, constraints.k),
        constraints,
    )
    trainer = ProxyTrainer(
        with_absolute_target_paths(settings),
        layout.proxy_pool.resolve(),
        layout.final_race_work.resolve(),
        proxy_run_key(settings, layout.proxy_pool),
    )
    try:
        race = run_race(
            entrants,
            seeds,
            int(history["candidate_id"].max()) + 1,
            trainer,
            settings,
            log=context.log.info,
            warn=context.log.warning,
        )
    except (ExecutionError, ProxiesFailed) as err:
        raise dg.Failure(str(err)) from err
    context.log.info(f"final race: {race.winner.name} wins\n{race.standings()}")
    return race


def race_metadata(race: "RaceResult | None") -> dict:
    if race is None:
        return {}
    return {"final_race": table(race.standings()), "final_race_winner": race.winner.name}


def search_seed_noise(
    race: "RaceResult | None", layout: Layout, iterations: int
) -> tuple[float | None, str | None]:
    """The seed noise shown beside the optimal mixture, and where it was measured: the final
    race's fresh seeds at the full budget when it had two or more, else the rounds' seed
    repeats; (None, None) without either."""
    from climb_assets.core.search.strategy import seed_noise

    if race is not None and (noise := race.seed_noise()) is not None:
        return noise, f"final race: {race.runs.height} proxies"
    pairs = seed_repeats(layout, iterations)
    if pairs is None or pairs.height == 0:
        return None, None
    noise = seed_noise(pairs["score"].to_numpy(), pairs["repeat_score"].to_numpy())
    return noise, f"seed repeats: {pairs.height} pairs"


def noise_table(summaries: list[dict]) -> pl.DataFrame:
    """Per iteration: score spread among candidates, seed noise, predictor spread, CV Spearman."""
    return pl.DataFrame(
        [
            {
                "iteration": s["iteration"],
                "score_spread": s.get("score_spread"),
                "seed_noise": s.get("seed_noise"),
                "predictor_spread": s.get("predictor_spread"),
                "cv_spearman": s.get("cv_spearman"),
            }
            for s in summaries
        ],
        schema={
            "iteration": pl.Int64,
            "score_spread": pl.Float64,
            "seed_noise": pl.Float64,
            "predictor_spread": pl.Float64,
            "cv_spearman": pl.Float64,
        },
    )
