"""The search's result as `optimal_mixture.json` records it: the chosen weights, how they were
chosen (the predictor's choice, or the final race's winner), what the predictor says of them,
and what the search was made on. Consumers (the dataset, the evaluation, the report, `climb`)
read this record; `SUPER_CLUSTERS_ID` ties it to the super-clusters it weighs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from climb_assets.core.shared.identity import SUPER_CLUSTERS_ID
from climb_assets.settings import Settings

if TYPE_CHECKING:
    from climb_assets.core.search.final_race import RaceResult
    from climb_assets.core.search.strategy import OptimalMixture


def chosen_weights(best: OptimalMixture, race: RaceResult | None) -> np.ndarray:
    """The race's winner when there was a race, else the predictor's choice."""
    return best.weights if race is None else race.winner.weights


def choice_method(predicted_method: str, race: RaceResult | None) -> str:
    """How the optimal mixture was chosen: by the race, or the predictor's way without one."""
    if race is None:
        return predicted_method
    return f"race winner: {race.winner.name}"


def optimal_mixture_record(
    best: OptimalMixture,
    race: RaceResult | None,
    caps: np.ndarray,
    settings: Settings,
    summaries: list[dict[str, Any]],
    seed_noise: tuple[float | None, str | None],
    super_clusters_id: str,
) -> dict[str, Any]:
    """The record of `optimal_mixture.json` (weights by super-cluster number as strings);
    `seed_noise` is the noise and where it was measured."""
    weights = chosen_weights(best, race)
    choice = best.choice
    predicted, spread = best.predicted, best.predicted_spread
    if race is not None:  # the same predictor's view of the race's winner
        predicted = float(best.predictor.predictor.predict(weights[None])[0])
        spread = float(best.predictor.predictor.predict_spread(weights[None])[0])
    cv = best.predictor.cv_spearman
    return {
        "weights": _by_number(weights),
        "predicted_objective": predicted,
        "predicted_spread": spread,
        "choice_method": choice_method(choice.method, race),
        "predicted_choice": _by_number(best.weights),
        "predicted_choice_method": choice.method,
        "predicted_choice_objective": best.predicted,
        "final_race": None if race is None else race.standings().to_dicts(),
        "region_size": choice.region_size,
        "objective_direction": "higher is better",
        "best_observed_objective": best.best_observed_score,
        "best_observed_predicted": choice.best_observed_predicted,
        "best_observed_weights": _by_number(best.best_observed_weights),
        "caps": _by_number(caps),
        "final_cv_spearman": None if np.isnan(cv) else cv,
        "seed_noise": seed_noise[0],
        "seed_noise_from": seed_noise[1],
        "pool_size": best.pool_size,
        "top_k": settings.search.final_top_k,
        "min_weight": settings.search.final_min_weight,
        # where the predictor's best lay against the runs' trust region (None: region off)
        "trust_region": choice.trust and choice.trust.to_json([str(i) for i in range(len(caps))]),
        "iterations": summaries,
        "targets": [t.model_dump(mode="json") for t in settings.targets],
        SUPER_CLUSTERS_ID: super_clusters_id,  # consumers check their super-clusters against it
    }


def _by_number(values: np.ndarray) -> dict[str, float]:
    return {str(i): float(v) for i, v in enumerate(values)}
