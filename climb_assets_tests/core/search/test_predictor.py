from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from climb_assets.core.search.final_choice import best_mixture, choose_final
from climb_assets.core.search.mixtures import (
    MixtureConstraints,
    enforce_constraints,
    sample_dirichlet,
)
from climb_assets.core.search.predictor import (
    FEW_ROWS_ROUNDS,
    META_FILE,
    Predictor,
    cross_validated_spearman,
    fit_predictor,
    member_file,
    spearman,
)
from climb_assets.settings import PredictorSettings

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
    assert fitted.info["round_selection"] == "cross_validation"
    assert fitted.info["members"] == PredictorSettings().ensemble_size


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
    np.testing.assert_array_equal(again.predict_spread(pool), fitted.predict_spread(pool))
    other = fit_predictor(*training, seed=1)  # other bootstrap resamples for the members
    assert not np.array_equal(other.predict_spread(pool), fitted.predict_spread(pool))


def test_save_and_load_round_trip(fitted: Predictor, tmp_path: Path) -> None:
    fitted.save(tmp_path / "model")
    loaded = Predictor.load(tmp_path / "model")
    pool = _mixtures(100, seed=5)
    assert len(loaded.boosters) == len(fitted.boosters) == PredictorSettings().ensemble_size
    np.testing.assert_array_equal(loaded.member_predictions(pool), fitted.member_predictions(pool))
    np.testing.assert_array_equal(loaded.predict_spread(pool), fitted.predict_spread(pool))
    assert loaded.weight_columns == fitted.weight_columns and loaded.maximize is True
    assert loaded.info == fitted.info
    (tmp_path / "model" / member_file(3)).unlink()  # a member lost: partial directory
    with pytest.raises(FileNotFoundError, match=r"model-003\.txt.*incomplete"):
        Predictor.load(tmp_path / "model")
    fitted.save(tmp_path / "model")
    (tmp_path / "model" / META_FILE).unlink()  # as if the save was interrupted
    with pytest.raises(FileNotFoundError, match=r"predictor\.json is missing"):
        Predictor.load(tmp_path / "model")
    with pytest.raises(FileNotFoundError, match="missing"):
        Predictor.load(tmp_path / "nowhere")


def test_ensemble_spread_is_positive_on_noisy_data() -> None:
    weights = _mixtures(60, seed=11)
    noisy = _quadratic(weights) + np.random.default_rng(11).normal(0, 0.05, len(weights))
    predictor = fit_predictor(weights, noisy, seed=0)
    pool = _mixtures(500, seed=12)
    spread = predictor.predict_spread(pool)
    assert spread.shape == (500,) and (spread > 0).mean() > 0.9
    members = predictor.member_predictions(pool)
    # Predictions come from member 0 (every row); the bootstrap members only give the spread.
    np.testing.assert_array_equal(predictor.predict(pool), members[0])
    np.testing.assert_allclose(spread, members.std(axis=0))
    single = fit_predictor(weights, noisy, 0, settings=PredictorSettings(ensemble_size=1))
    np.testing.assert_array_equal(single.predict_spread(pool), np.zeros(500))
    np.testing.assert_array_equal(single.predict(pool), members[0])  # member 0: every row


def test_settings_fix_rounds_and_shape(training: tuple[np.ndarray, np.ndarray]) -> None:
    # Tree-only: the smooth base fits this quadratic so well that the trees stop early.
    settings = PredictorSettings(
        rounds=7, ensemble_size=3, num_leaves=4, learning_rate=0.2, smooth_base=False
    )
    predictor = fit_predictor(*training, seed=0, settings=settings)
    assert predictor.info["rounds"] == 7 and predictor.info["round_selection"] == "settings"
    assert len(predictor.boosters) == 3
    assert all(b.current_iteration() == 7 for b in predictor.boosters)
    capped = fit_predictor(*training, seed=0, settings=PredictorSettings(max_rounds=30))
    assert predictor.info["rounds"] <= 30 and capped.info["rounds"] <= 30


def test_predictions_are_not_flat(fitted: Predictor) -> None:
    pool = _mixtures(2000, seed=13)
    assert len(np.unique(fitted.predict(pool))) > 0.9 * len(pool)


def test_smooth_base_follows_one_run_to_the_cap() -> None:
    """Runs keep group 0 below 0.3 except one vertex run at 0.8; the score rises with diminishing
    returns in w_0. Trees cannot split off one row and stay near the best low-w_0 scores; the
    smooth base carries the trend to a new mixture next to the vertex."""
    rng = np.random.default_rng(11)
    weights = rng.dirichlet(np.ones(6), 40)
    weights = np.vstack([weights[weights[:, 0] < 0.3][:24], [[0.8, 0.04, 0.04, 0.04, 0.04, 0.04]]])
    scores = -np.exp(-4 * weights[:, 0]) + rng.normal(0, 0.01, len(weights))
    near_cap = np.array([[0.75, 0.1, 0.05, 0.02, 0.05, 0.03]])
    truth = -np.exp(-4 * 0.75)
    errors = {}
    for smooth in (True, False):
        settings = PredictorSettings(smooth_base=smooth)
        predictor = fit_predictor(weights, scores, seed=0, settings=settings)
        errors[smooth] = abs(predictor.predict(near_cap)[0] - truth)
    # Measured: 0.02 with the smooth base, 0.24 with trees alone (scores span 0.05..0.9).
    assert errors[True] < 0.08 < 0.15 < errors[False], errors


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


def _two_peaks(weights: np.ndarray) -> np.ndarray:
    """Two equal, separated peaks (total-variation distance 0.7); low between them."""
    near = [np.exp(-(((weights - peak) ** 2).sum(axis=1)) / 0.02) for peak in PEAKS]
    return np.maximum(*near)


PEAKS = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])


def test_choose_final_does_not_blend_two_peaks() -> None:
    constraints = MixtureConstraints.unconstrained(3)
    weights = sample_dirichlet(constraints, 200, seed=20)
    scores = _two_peaks(weights) + np.random.default_rng(20).normal(0, 0.01, len(weights))
    predictor = fit_predictor(weights, scores, seed=0)
    pool = sample_dirichlet(constraints, 4000, seed=21)
    choice = choose_final(predictor, pool, weights, scores, top_k=200, maximize=True)
    to_peaks = 0.5 * np.abs(PEAKS - choice.mixture).sum(axis=1)
    assert to_peaks.min() < 0.15, (choice.mixture, choice.method)
    assert choice.mixture.sum() == pytest.approx(1.0)
    assert choice.predicted >= choice.best_observed_predicted
    assert choice.best_observed_score == scores.max()
    np.testing.assert_array_equal(choice.best_observed_weights, weights[scores.argmax()])
    assert 1 <= choice.region_size <= 200 and len(choice.top_indices) == 200
    # The top-k spans both peaks: blending them all, as best_mixture does, lands in between.
    candidates = np.vstack([pool, weights])
    top = candidates[choice.top_indices]
    assert (0.5 * np.abs(top[:, None] - PEAKS).sum(axis=2)).argmin(axis=1).min() == 0
    assert (0.5 * np.abs(top[:, None] - PEAKS).sum(axis=2)).argmin(axis=1).max() == 1
    blended = best_mixture(predictor, pool, top_k=200, maximize=True).mixture
    assert (0.5 * np.abs(PEAKS - blended).sum(axis=1)).min() > to_peaks.min()
    mean_only = choose_final(predictor, pool, weights, scores, 200, True, compare_to_pool=False)
    assert (0.5 * np.abs(PEAKS - mean_only.mixture).sum(axis=1)).min() < 0.15
    assert mean_only.predicted >= mean_only.best_observed_predicted
    assert mean_only.method in {"region mean", "best observed"}


def test_choose_final_never_predicts_worse_than_the_best_run(training: tuple) -> None:
    weights, scores = training
    minimizer = fit_predictor(weights, -scores, seed=0, maximize=False)
    pool = _mixtures(50, seed=22)  # a small, poor pool: the observed runs must still compete
    choice = choose_final(minimizer, pool, weights, -scores, top_k=8, maximize=False)
    assert choice.predicted <= choice.best_observed_predicted
    assert choice.method in {"region mean", "best predicted", "best observed"}
    for compare_to_pool in (True, False):
        other = choose_final(
            minimizer, pool, weights, -scores, 8, False, compare_to_pool=compare_to_pool
        )
        assert other.predicted <= other.best_observed_predicted
    only_observed = choose_final(minimizer, pool[:0], weights, -scores, 1, maximize=False)
    assert only_observed.method in {"best predicted", "best observed", "region mean"}
    assert only_observed.predicted == pytest.approx(minimizer.predict(weights).min())
    with pytest.raises(ValueError, match="fitted to minimize"):
        choose_final(minimizer, pool, weights, -scores, top_k=8, maximize=True)


def test_choose_final_zeroes_the_slivers_the_average_leaves() -> None:
    # Best on two groups only; every top-k member carries its own small remainder on the
    # others, so their mean spreads a sliver over every group.
    best = np.array([0.6, 0.4, 0, 0, 0, 0])
    constraints = MixtureConstraints(
        prior=np.full(6, 1 / 6), upper=np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.5]), min_weight=0.0
    )
    weights = sample_dirichlet(constraints, 300, seed=30)
    scores = -((weights - best) ** 2).sum(axis=1)
    predictor = fit_predictor(weights, scores, seed=0)
    pool = sample_dirichlet(constraints, 4000, seed=31)
    args = (predictor, pool, weights, scores, 32, True, constraints)
    dense = choose_final(*args, min_weight=0.0)
    sparse = choose_final(*args, min_weight=0.05)
    assert dense.method == sparse.method == "region mean"
    assert (dense.mixture > 0).sum() > (sparse.mixture > 0).sum()
    assert ((sparse.mixture == 0) | (sparse.mixture >= 0.05)).all(), sparse.mixture
    assert not sparse.kept_slivers
    assert sparse.mixture.sum() == pytest.approx(1.0)
    assert (sparse.mixture <= constraints.upper + 1e-9).all()
    # Where zeroing would leave caps that cannot reach 1, the slivers stay.
    tight = MixtureConstraints(prior=np.full(6, 1 / 6), upper=np.full(6, 0.2), min_weight=0.0)
    runs = sample_dirichlet(tight, 200, seed=32)
    run_scores = -((runs - best) ** 2).sum(axis=1)
    pool = sample_dirichlet(tight, 2000, seed=33)
    kept = choose_final(predictor, pool, runs, run_scores, 8, True, tight, min_weight=0.5)
    assert tight.feasible(kept.mixture).all(), kept.mixture


def test_choose_final_keeps_slivers_the_predictor_prefers() -> None:
    # Best with 0.04 on each of four groups: zeroing them (floor 0.05) moves away from it.
    best = np.array([0.5, 0.34, 0.04, 0.04, 0.04, 0.04])
    constraints = MixtureConstraints.unconstrained(6)
    weights = sample_dirichlet(constraints, 400, seed=40)
    scores = -np.abs(weights - best).sum(axis=1)
    predictor = fit_predictor(weights, scores, seed=0)
    pool = sample_dirichlet(constraints, 4000, seed=41)
    args = (predictor, pool, weights, scores, 32, True, constraints)
    floor = choose_final(*args, min_weight=0.05)
    dense = choose_final(*args, min_weight=0.0)
    sparse = enforce_constraints(dense.mixture[None], replace(constraints, min_weight=0.05))
    predicted_sparse = float(predictor.predict(sparse)[0])
    assert dense.method == "region mean"
    assert predicted_sparse < dense.predicted  # the planted case: slivers predicted better
    assert floor.predicted == pytest.approx(dense.predicted)
    np.testing.assert_allclose(floor.mixture, dense.mixture)
    assert floor.kept_slivers and not dense.kept_slivers  # reported, for `propose`


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


def test_cross_validation_needs_two_folds(training: tuple) -> None:
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_validated_spearman(*training, folds=1, seed=0)


def test_cross_validation_with_the_fewest_rows_falls_back_to_leave_one_out() -> None:
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(3), size=4)
    value = cross_validated_spearman(weights, weights[:, 0], folds=3, seed=0)
    assert np.isnan(value) or -1.0 <= value <= 1.0


def test_single_model_saves_from_before_the_ensemble_still_load(
    training: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    single = fit_predictor(*training, seed=0, settings=PredictorSettings(ensemble_size=1))
    single.save(tmp_path / "old")
    (tmp_path / "old" / member_file(0)).rename(tmp_path / "old" / "model.txt")
    meta = json.loads((tmp_path / "old" / META_FILE).read_text())
    del meta["members"], meta["format_version"]
    (tmp_path / "old" / META_FILE).write_text(json.dumps(meta))
    pool = _mixtures(50, seed=30)
    np.testing.assert_array_equal(
        Predictor.load(tmp_path / "old").predict(pool), single.predict(pool)
    )
