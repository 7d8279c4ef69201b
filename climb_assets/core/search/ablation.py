"""Search designs compared at an equal proxy budget: CLIMB's iterative bootstrap, one-shot
regression (RegMix: every proxy in one round, then the predictor's choice) and the best of
random draws.

Each design is the product's own search (`run_round`, `choose_optimal_mixture`, the final race)
under other search settings, so a comparison measures what a user would get by changing
`search.proxies_per_iteration`, not a re-implementation. Successive halving applies within each
design's rounds as configured (`search.rung_fraction`); a proxy stopped at its rung still
counts as one proxy of the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from climb_assets.core.search.proxy_jobs import ProxyTrainer
from climb_assets.core.search.strategy import TokenCounts, scored_runs
from climb_assets.settings import SearchSettings, Settings

Log = Callable[[str], None]
# The final race's entrants: the predictor's choice, the best observed run, the best single.
RACE_FINALISTS = 3


@dataclass(frozen=True)
class Design:
    """One way to spend the proxies: the search's settings, and how the mixture is picked."""

    name: str
    search: SearchSettings
    pick: Literal["search", "best_observed"]  # the search's choice, or the best run seen


@dataclass
class DesignResult:
    design: str
    weights: np.ndarray  # the chosen mixture
    how: str  # how it was chosen
    proxies: int  # proxies trained: rounds, seed repeats and race
    best_observed: float  # the best proxy score the design saw
    history: pl.DataFrame  # every round's scored runs


def proxy_budget(search: SearchSettings) -> int:
    """Proxies a search trains at most: its candidates, each round's seed repeats and the
    final race's (a finalist equal to another is not trained twice, so it may spend less)."""
    rounds = search.proxies_per_iteration
    repeats = sum(min(search.seed_repeats, n) for n in rounds)
    return sum(rounds) + repeats + RACE_FINALISTS * search.final_race_seeds


def equal_budget_designs(search: SearchSettings) -> list[Design]:
    """The configured (iterative) search and the one-round designs of the same budget: one-shot
    with RegMix's random draws around the token shares, one-shot with the search's own first
    round design ('cover'), and the best of random draws with no predictor at all."""
    budget = proxy_budget(search)
    race = RACE_FINALISTS * search.final_race_seeds
    one_round = budget - race - search.seed_repeats
    if one_round <= search.seed_repeats:
        raise ValueError(f"a budget of {budget} proxies leaves no room for a one-shot round")
    one_shot = search.model_copy(update={"proxies_per_iteration": [one_round]})
    random = {"proxies_per_iteration": [budget], "seed_repeats": 0, "final_race_seeds": 0}
    return [
        Design("iterative", search, "search"),
        Design("one-shot", one_shot.model_copy(update={"initial_design": "regmix"}), "search"),
        Design("one-shot-cover", one_shot.model_copy(update={"initial_design": "cover"}), "search"),
        Design(
            "best-of-random",
            search.model_copy(update={**random, "initial_design": "regmix"}),
            "best_observed",
        ),
    ]


def run_design(
    design: Design,
    settings: Settings,
    token_counts: TokenCounts,
    budget_tokens: int,
    trainer: ProxyTrainer,
    log: Log = print,
) -> DesignResult:
    """Run `design`'s rounds, then pick its mixture (with the final race where its settings
    have one). `trainer` checkpoints each proxy in its work_dir, one folder per design: an
    interrupted design resumes. Higher objectives are better, as in the search."""
    from climb_assets.core.search.bootstrap import run_round

    settings = settings.model_copy(update={"search": design.search})
    history: pl.DataFrame | None = None
    proxies = 0
    for iteration in range(1, len(design.search.proxies_per_iteration) + 1):
        label = f"{design.name} round {iteration}"
        result = run_round(
            iteration, history, token_counts, budget_tokens, settings, trainer, log, label=label
        )
        proxies += result.runs.height + result.repeats.height
        history = (
            result.runs if history is None else pl.concat([history, result.runs], how="diagonal")
        )
    assert history is not None  # proxies_per_iteration has at least one round
    best_seen = float(history["score"].max())  # type: ignore[arg-type]
    if design.pick == "best_observed":
        weights, scores = scored_runs(history, len(token_counts))
        weights = weights[int(np.argmax(scores))]
        return DesignResult(design.name, weights, "best observed run", proxies, best_seen, history)
    weights, how, raced = _search_choice(
        settings, history, token_counts, budget_tokens, trainer, log
    )
    return DesignResult(design.name, weights, how, proxies + raced, best_seen, history)


def _search_choice(
    settings: Settings,
    history: pl.DataFrame,
    token_counts: TokenCounts,
    budget_tokens: int,
    trainer: ProxyTrainer,
    log: Log,
) -> tuple[np.ndarray, str, int]:
    """The search's optimal mixture, as the `optimal_mixture` asset chooses it: the
    predictor's choice, raced against the best observed run and the best single super-cluster
    when `search.final_race_seeds` > 0. Returns it, how it was chosen and the race's proxies."""
    from climb_assets.core.search.final_race import finalists, run_race
    from climb_assets.core.search.mixtures import build_constraints
    from climb_assets.core.search.result import choice_method, chosen_weights
    from climb_assets.core.search.strategy import choose_optimal_mixture

    search = settings.search
    best = choose_optimal_mixture(
        history,
        token_counts,
        search,
        budget_tokens,
        settings.seed,
        maximize=True,
        predictor_settings=settings.predictor,
    )
    if search.final_race_seeds == 0:
        return best.weights, best.choice.method, 0
    constraints = build_constraints(token_counts, search, budget_tokens)
    entrants = finalists(best.weights, *scored_runs(history, constraints.k), constraints)
    first_id = int(history["candidate_id"].max()) + 1  # type: ignore[arg-type]
    race = run_race(entrants, search.final_race_seeds, first_id, trainer, settings, log, log)
    return chosen_weights(best, race), choice_method(best.choice.method, race), race.runs.height
