from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from climb_assets.core.mixtures import MixtureConstraints, sample_dirichlet
from climb_assets.core.predictor import (
    FEW_ROWS_ROUNDS,
    Predictor,
    best_mixture,
    cross_validated_spearman,
    fit_predictor,
    spearman,
)

TARGET = np.array([0.35, 0.25, 0.2, 0.1, 0.05, 0.05])


def _quadratic(weights: np.ndarray) -> np.ndarray:
    """Known objective: highest at TARGET."""
    return -((weights - TARGET) ** 2).sum(axis=1)


def _mixtures(n: int, seed: int) -> np.ndarray:
    return sample_dirichlet(MixtureConstraints.unconstrained(len(TARGET)), n, seed)


@pytest.fixture(scope="module")
def training() -> tuple[np.ndarray, np.ndarray]:
    weights = _mixtures(150, seed=0)
    noise = np.random.default_rng(0).normal(0, 0.002, len(weights))
    return weights, _quadratic(weights) + noise


@pytest.fixture(scope="module")
def fitted(training: tuple[np.ndarray, np.ndarray]) -> Predictor:
    return fit_predictor(*training, seed=0)


def test_recovers_the_ranking_of_a_known_function(fitted: Predictor) -> None:
    held_out = _mixtures(300, seed=1)
    assert spearman(fitted.predict(held_out), _quadratic(held_out)) > 0.8
    assert fitted.info["round_selection"] == "early_stopping"


def test_cross_validated_spearman_is_high_for_signal_and_low_for_noise(
    training: tuple[np.ndarray, np.ndarray],
) -> None:
    weights, scores = training
    assert cross_validated_spearman(weights, scores, folds=5, seed=0) > 0.8
    noise = np.random.default_rng(1).normal(size=len(scores))
    assert abs(cross_validated_spearman(weights, noise, folds=5, seed=0)) < 0.3


def test_leave_one_out_when_rows_are_fewer_than_folds() -> None:
    weights = _mixtures(6, seed=2)
    rho = cross_validated_spearman(weights, weights[:, 0], folds=10, seed=0)
    assert -1.0 <= rho <= 1.0


def test_few_rows_use_fixed_rounds_and_still_split() -> None:
    weights = _mixtures(8, seed=3)
    predictor = fit_predictor(weights, weights[:, 0], seed=0)
    assert predictor.info["rounds"] == FEW_ROWS_ROUNDS
    assert predictor.info["round_selection"].startswith("fixed")
    assert np.ptp(predictor.predict(weights)) > 0  # not a constant model


def test_fitting_is_deterministic(
    training: tuple[np.ndarray, np.ndarray], fitted: Predictor
) -> None:
    again = fit_predictor(*training, seed=0)
    pool = _mixtures(200, seed=4)
    np.testing.assert_array_equal(again.predict(pool), fitted.predict(pool))


def test_save_and_load_round_trip(fitted: Predictor, tmp_path: Path) -> None:
    fitted.save(tmp_path / "model")
    loaded = Predictor.load(tmp_path / "model")
    pool = _mixtures(100, seed=5)
    np.testing.assert_array_equal(loaded.predict(pool), fitted.predict(pool))
    assert loaded.weight_columns == fitted.weight_columns and loaded.maximize is True
    (tmp_path / "model" / "predictor.json").unlink()  # as if the save was interrupted
    with pytest.raises(FileNotFoundError, match=r"predictor\.json is missing"):
        Predictor.load(tmp_path / "model")


def test_feature_importance_points_at_the_driving_group() -> None:
    weights = _mixtures(120, seed=6)
    importance = fit_predictor(weights, weights[:, 2], seed=0).feature_importance()
    assert max(importance, key=importance.get) == "w_2"


def test_best_mixture_follows_the_direction(fitted: Predictor, training: tuple) -> None:
    pool = _mixtures(5000, seed=7)
    best = best_mixture(fitted, pool, top_k=16, maximize=True)
    assert best.mixture.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(best.mixture, pool[best.top_indices].mean(axis=0), atol=1e-12)
    assert np.linalg.norm(best.mixture - TARGET) < np.linalg.norm(pool - TARGET, axis=1).mean() / 2
    minimizer = fit_predictor(*training, seed=0, maximize=False)
    worst = best_mixture(minimizer, pool, top_k=16, maximize=False)
    assert worst.predicted < best.predicted
    with pytest.raises(ValueError, match="fitted to maximize"):
        best_mixture(fitted, pool, top_k=16, maximize=False)


def test_spearman_averages_tied_ranks() -> None:
    # scipy.stats.spearmanr([1, 2, 2, 3], [1, 2, 3, 4]) = 0.9486832980505138
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 2, 3, 4])) == pytest.approx(0.9486833)
    assert np.isnan(spearman(np.ones(4), np.arange(4)))


def test_bad_training_data_is_named() -> None:
    weights = _mixtures(5, seed=8)
    scores = np.array([1.0, 2.0, np.nan, 3.0, 4.0])
    with pytest.raises(ValueError, match="score of row 3 is not finite"):
        fit_predictor(weights, scores, seed=0)
    with pytest.raises(ValueError, match="needs at least 3"):
        fit_predictor(weights[:2], scores[:2], seed=0)
    with pytest.raises(ValueError, match="expects 6"):
        fit_predictor(weights, np.arange(5.0), seed=0).predict(np.ones((1, 3)) / 3)


def test_cross_validation_with_the_fewest_rows_falls_back_to_leave_one_out() -> None:
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(3), size=4)
    value = cross_validated_spearman(weights, weights[:, 0], folds=3, seed=0)
    assert np.isnan(value) or -1.0 <= value <= 1.0
