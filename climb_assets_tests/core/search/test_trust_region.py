from __future__ import annotations

import numpy as np
import pytest

from climb_assets.core.search.final_choice import choose_final
from climb_assets.core.search.mixtures import MixtureConstraints, sample_dirichlet
from climb_assets.core.search.predictor import fit_predictor
from climb_assets.core.search.strategy import final_trust_region
from climb_assets.core.search.trust_region import (
    MARGIN_SHARE,
    TrustRegion,
    median_spacing,
    nearest_run,
    trust_lines,
)

NAMES = [f"w_{j}" for j in range(5)]


def _capped_runs(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Runs that never put more than 0.12 on group 0, and a loss that falls steadily with
    that group's weight: a predictor fitted on them ranks mixtures heavy in group 0 best,
    far from every run (RegMix's HackerNews case)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(5), n)
    weights[:, 0] = rng.uniform(0, 0.12, n)
    weights[:, 1:] *= ((1 - weights[:, 0]) / weights[:, 1:].sum(axis=1))[:, None]
    loss = 3 - 2 * weights[:, 0] + 0.5 * ((weights[:, 1:] - 0.22) ** 2).sum(axis=1)
    return weights, loss + rng.normal(0, 0.005, n)


@pytest.fixture(scope="module")
def extrapolating() -> tuple:
    weights, loss = _capped_runs()
    predictor = fit_predictor(weights, loss, seed=0, maximize=False)
    pool = sample_dirichlet(MixtureConstraints.unconstrained(5), 3000, seed=1)
    return predictor, pool, weights, loss


def test_distances_and_spacing_on_known_points() -> None:
    runs = np.array([[1.0, 0.0, 0.0], [0.8, 0.2, 0.0], [0.0, 0.0, 1.0]])
    distance, index = nearest_run(np.array([[0.9, 0.1, 0.0], [0.0, 0.5, 0.5]]), runs)
    np.testing.assert_allclose(distance, [0.1, 0.5])
    np.testing.assert_array_equal(index, [0, 2])
    # Nearest neighbours: 0.2, 0.2, 0.8 (duplicates count once).
    assert median_spacing(np.vstack([runs, runs[:1]])) == pytest.approx(0.2)
    assert median_spacing(runs[:1]) == 0.0


def test_region_holds_the_runs_and_not_what_lies_far_or_past_a_weights_range() -> None:
    runs = np.array([[0.5, 0.5, 0.0], [0.4, 0.5, 0.1], [0.5, 0.4, 0.1], [0.4, 0.4, 0.2]])
    region = TrustRegion.around(runs, multiple=2.0)
    assert region.spacing == pytest.approx(0.1) and region.radius == pytest.approx(0.2)
    assert region.inside(runs).all()
    np.testing.assert_allclose(region.high, runs.max(axis=0) + MARGIN_SHARE * 0.2)
    far = np.array([0.0, 0.2, 0.8])
    assert not region.inside(far)[0]
    # Within the radius of run 4, but group 2 is 0.15 past its range (margin 0.1).
    past_range = np.array([0.3, 0.35, 0.35])
    excursion = region.excursion(past_range)
    assert excursion.distance == pytest.approx(0.15) and not excursion.inside
    assert list(excursion.beyond) == [2]
    assert final_trust_region(runs, 0.0) is None
    with pytest.raises(ValueError, match="non-negative"):
        TrustRegion.around(runs, -1.0)


def test_best_predicted_outside_the_runs_is_not_chosen_but_reported(extrapolating) -> None:
    predictor, pool, weights, loss = extrapolating
    untrusted = choose_final(predictor, pool, weights, loss, 16, False)
    assert untrusted.mixture[0] > 0.5  # the planted extrapolation: the check below can fail
    region = TrustRegion.around(weights, 2.0)
    choice = choose_final(predictor, pool, weights, loss, 16, False, trust=region)
    assert region.inside(choice.mixture)[0] and choice.mixture[0] <= region.high[0] + 1e-9
    assert choice.predicted <= choice.best_observed_predicted  # still no worse than a run
    report = choice.trust
    assert report is not None and report.best_outside and report.excluded > 0
    assert report.best.distance > region.radius and 0 in report.best.beyond
    assert report.best_predicted_score < choice.predicted  # the outside point looked better
    assert report.chosen.inside
    data = report.to_json(NAMES)
    assert (
        data["best_predicted_outside"] and "w_0" in data["best_predicted"]["weights_beyond_range"]
    )
    lines = trust_lines(data)
    assert "lies outside" in lines[1] and "w_0" in lines[1] and "chosen inside instead" in lines[2]


def test_a_flag_only_region_keeps_the_choice_and_flags_it(extrapolating) -> None:
    predictor, pool, weights, loss = extrapolating
    region = TrustRegion.around(weights, 2.0, enforce=False)
    choice = choose_final(predictor, pool, weights, loss, 16, False, trust=region)
    untrusted = choose_final(predictor, pool, weights, loss, 16, False)
    np.testing.assert_array_equal(choice.mixture, untrusted.mixture)
    assert choice.trust is not None and not choice.trust.chosen.inside
    assert choice.trust.excluded == 0
    assert any(line.startswith("WARNING") for line in trust_lines(choice.trust.to_json(NAMES)))


def test_a_choice_inside_the_runs_barely_moves() -> None:
    # Runs all over the simplex: the best predicted mixture lies among them; only a few top-k
    # members outside leave the average.
    weights = sample_dirichlet(MixtureConstraints.unconstrained(5), 150, seed=3)
    loss = ((weights - np.array([0.3, 0.3, 0.2, 0.1, 0.1])) ** 2).sum(axis=1)
    predictor = fit_predictor(weights, loss, seed=0, maximize=False)
    pool = sample_dirichlet(MixtureConstraints.unconstrained(5), 2000, seed=4)
    region = TrustRegion.around(weights, 2.0)
    choice = choose_final(predictor, pool, weights, loss, 16, False, trust=region)
    plain = choose_final(predictor, pool, weights, loss, 16, False)
    assert choice.trust is not None and not choice.trust.best_outside
    assert choice.trust.chosen.inside
    assert 0.5 * np.abs(choice.mixture - plain.mixture).sum() < 0.03
