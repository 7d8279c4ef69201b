"""The best mixture for a table of past runs (`climb predictor propose`), chosen by the search's
own rule (`choose_final`): a predictor fitted on every run scores a pool of Dirichlet draws
around the runs plus the runs themselves, and the mean of the top-k within the best region,
inside the runs' trust region, is proposed.

The search's final choice knows each super-cluster's tokens and caps; a table of runs does
not, so the prior is the runs' mean mixture and a weight the runs never used stays at 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from climb_assets.core.search.final_choice import FinalChoice, choose_final
from climb_assets.core.search.mixtures import (
    MixtureConstraints,
    sample_around,
    sample_dirichlet,
    unique_rows,
)
from climb_assets.core.search.predictor import Predictor, fit_predictor
from climb_assets.core.search.run_table import RunTable
from climb_assets.core.search.strategy import final_trust_region
from climb_assets.settings import PredictorSettings, SearchSettings


def proposal_constraints(weights: np.ndarray) -> MixtureConstraints:
    """The table's mean mixture as prior; groups the table never uses stay at 0 (the predictor
    knows nothing about them)."""
    used = (weights > 0).any(axis=0).astype(float)
    prior = weights.mean(axis=0)
    return MixtureConstraints(prior=prior / prior.sum(), upper=used, min_weight=0.0)


def proposal_pool(weights: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Half RegMix draws around the table's mean mixture, half perturbations of its rows."""
    constraints = proposal_constraints(weights)
    rng = np.random.default_rng(seed)
    fresh = sample_dirichlet(constraints, size // 2, rng)
    around = sample_around(weights, size - size // 2, constraints, rng)
    return unique_rows(np.vstack([fresh, around]))


def propose(
    table: RunTable,
    maximize: bool,
    search: SearchSettings,
    predictor_settings: PredictorSettings,
    seed: int,
    enforce_trust: bool = True,
) -> dict[str, Any]:
    """The proposal's record (`proposal_record`) for `table`, with the search's final-choice
    settings (`candidate_pool_size`, `final_top_k`, `final_region_radius`, `final_min_weight`,
    `final_trust_radius`); `enforce_trust=False` only reports a choice outside the region."""
    predictor = fit_predictor(
        table.weights,
        table.objective,
        seed,
        maximize,
        table.weight_columns,
        settings=predictor_settings,
    )
    pool = proposal_pool(table.weights, search.candidate_pool_size, seed)
    choice = choose_final(
        predictor,
        pool,
        table.weights,
        table.objective,
        search.final_top_k,
        maximize,
        proposal_constraints(table.weights),
        search.final_region_radius,
        min_weight=search.final_min_weight,
        trust=final_trust_region(table.weights, search.final_trust_radius, enforce_trust),
    )
    pool_size = len(pool) + len(table.weights)  # the runs are candidates too
    return proposal_record(table, predictor, choice, search.final_min_weight, pool_size)


def proposal_record(
    table: RunTable,
    predictor: Predictor,
    choice: FinalChoice,
    min_weight: float,
    pool_size: int,
) -> dict[str, Any]:
    """The proposal as `climb predictor propose --format json` prints it: weights by column,
    what the predictor says of them, how they were chosen and the best observed run."""
    columns = table.weight_columns
    return {
        "direction": "maximize" if predictor.maximize else "minimize",
        "predicted": choice.predicted,
        "predicted_spread": float(predictor.predict_spread(choice.mixture[None])[0]),
        "method": choice.method,
        "weights": dict(zip(columns, choice.mixture.tolist(), strict=True)),
        "top_k": len(choice.top_indices),
        "region_size": choice.region_size,
        "min_weight": min_weight,
        "kept_slivers": choice.kept_slivers,
        "pool_size": pool_size,
        "best_observed": _best_observed(table, choice, predictor.maximize),
        "trust_region": None if choice.trust is None else choice.trust.to_json(columns),
    }


def _best_observed(table: RunTable, choice: FinalChoice, maximize: bool) -> dict[str, Any]:
    """The best run of the table: its row (from 1), key, objective and predicted score."""
    best_row = int(np.argmax(table.objective) if maximize else np.argmin(table.objective))
    observed: dict[str, Any] = {
        "row": best_row + 1,
        "objective": choice.best_observed_score,
        "predicted": choice.best_observed_predicted,
        "weights": dict(
            zip(table.weight_columns, choice.best_observed_weights.tolist(), strict=True)
        ),
    }
    if table.keys is not None:
        observed["key"] = table.keys[best_row]
    return observed
