"""LightGBM predictor from mixture weights to a proxy score (CLIMB / RegMix).

Regularized as in the paper: L1 + L2, max_depth 4, at least 5 rows per leaf, early stopping.
Two adaptations for the handful of proxies a small run trains, both recorded in `Predictor.info`:
- targets are standardized before fitting, so the L1/L2 penalties mean the same thing whether the
  score is an accuracy near 0.3 or a loss near 4;
- the rows-per-leaf minimum shrinks below 5 when there are fewer than 20 rows (with 8 rows and 5
  per leaf no tree could split, and the predictor would be a constant).
With at least `MIN_ROWS_EARLY_STOPPING` rows the round count is chosen by early stopping on a
held-out split, then the model is refitted on every row with that many rounds; with fewer rows a
validation split is too small to trust, so a fixed `FEW_ROWS_ROUNDS` is used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import lightgbm as lgb
import numpy as np

from climb_assets.core.atomic import write_json, write_text
from climb_assets.core.mixtures import MixtureConstraints, enforce_constraints, project_to_simplex

LEARNING_RATE = 0.03
MAX_ROUNDS = 1000
EARLY_STOPPING_ROUNDS = 50
FEW_ROWS_ROUNDS = 200
MIN_ROWS_EARLY_STOPPING = 10
VALIDATION_FRACTION = 0.2
PAPER_MIN_ROWS_PER_LEAF = 5
MIN_FIT_ROWS = 3
MIN_CV_ROWS = 4
# Training sets are tiny: one thread is fastest and bit-for-bit reproducible. Prediction of large
# pools benefits from a few threads and its output does not depend on the thread count.
TRAIN_THREADS = 1
PREDICT_THREADS = max(1, min(4, os.cpu_count() or 1))

MODEL_FILE = "model.txt"
META_FILE = "predictor.json"


@dataclass
class Predictor:
    """A fitted booster plus what is needed to use it on its own: columns, direction, scaling."""

    booster: lgb.Booster
    weight_columns: list[str]
    maximize: bool
    target_mean: float
    target_scale: float
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """Predicted scores of mixtures (n, k), in the units of the training scores."""
        weights = np.atleast_2d(np.asarray(weights, dtype=float))
        if weights.shape[1] != len(self.weight_columns):
            raise ValueError(
                f"mixtures have {weights.shape[1]} weights, the predictor expects "
                f"{len(self.weight_columns)} ({', '.join(self.weight_columns)})"
            )
        standardized = self.booster.predict(weights, num_threads=PREDICT_THREADS)
        return np.asarray(standardized) * self.target_scale + self.target_mean

    def feature_importance(self) -> dict[str, float]:
        """Total split gain per weight column (which groups move the score)."""
        gains = self.booster.feature_importance(importance_type="gain")
        return {name: float(gain) for name, gain in zip(self.weight_columns, gains, strict=True)}

    def save(self, directory: Path) -> None:
        """Write `model.txt` (LightGBM text) and `predictor.json`; the json goes last, so a
        directory without it is an interrupted save."""
        directory = Path(directory)
        write_text(self.booster.model_to_string(), directory / MODEL_FILE)
        meta = {
            "weight_columns": self.weight_columns,
            "maximize": self.maximize,
            "target_mean": self.target_mean,
            "target_scale": self.target_scale,
            "info": self.info,
        }
        write_json(meta, directory / META_FILE)

    @classmethod
    def load(cls, directory: Path) -> Predictor:
        directory = Path(directory)
        for name in (MODEL_FILE, META_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} is missing: not a saved predictor")
        meta = json.loads((directory / META_FILE).read_text())
        booster = lgb.Booster(model_str=(directory / MODEL_FILE).read_text())
        return cls(
            booster=booster,
            weight_columns=list(meta["weight_columns"]),
            maximize=bool(meta["maximize"]),
            target_mean=float(meta["target_mean"]),
            target_scale=float(meta["target_scale"]),
            info=dict(meta.get("info", {})),
        )


class BestMixture(NamedTuple):
    mixture: np.ndarray  # (k,)
    predicted: float  # predictor's score of `mixture` itself
    top_indices: np.ndarray  # rows of the pool that were averaged, best first


def lightgbm_params(n_rows: int, seed: int) -> dict[str, Any]:
    """The paper's regularized, deterministic regression setup, sized for `n_rows`."""
    return {
        "objective": "regression",
        "learning_rate": LEARNING_RATE,
        "max_depth": 4,
        "num_leaves": 15,
        "min_data_in_leaf": min(PAPER_MIN_ROWS_PER_LEAF, max(2, n_rows // 4)),
        "min_data_in_bin": 1,  # default 3 merges most distinct weights when rows are few
        "lambda_l1": 0.1,
        "lambda_l2": 1.0,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": TRAIN_THREADS,
        "seed": seed,
        "verbosity": -1,
    }


def fit_predictor(
    weights: np.ndarray,
    scores: np.ndarray,
    seed: int,
    maximize: bool = True,
    weight_columns: list[str] | None = None,
) -> Predictor:
    """Fit the predictor on mixtures (n, k) and their scores (n,); `maximize` is recorded."""
    weights, scores = _check_training_data(weights, scores, MIN_FIT_ROWS)
    mean, scale = float(scores.mean()), float(scores.std()) or 1.0
    target = (scores - mean) / scale
    params = lightgbm_params(len(scores), seed)
    rounds, early_stopping = _choose_rounds(weights, target, params, seed)
    booster = lgb.train(params, lgb.Dataset(weights, target, params=params), rounds)
    columns = weight_columns or [f"w_{index}" for index in range(weights.shape[1])]
    if len(columns) != weights.shape[1]:
        raise ValueError(f"{len(columns)} weight column names for {weights.shape[1]} columns")
    info = {
        "n_rows": len(scores),
        "rounds": rounds,
        "round_selection": "early_stopping" if early_stopping else "fixed (too few rows)",
        "min_data_in_leaf": params["min_data_in_leaf"],
        "seed": seed,
    }
    return Predictor(booster, list(columns), maximize, mean, scale, info)


def _choose_rounds(
    weights: np.ndarray, target: np.ndarray, params: dict[str, Any], seed: int
) -> tuple[int, bool]:
    """(rounds, chosen by early stopping?) from a seeded held-out split."""
    n = len(target)
    if n < MIN_ROWS_EARLY_STOPPING:
        return FEW_ROWS_ROUNDS, False
    order = np.random.default_rng(seed).permutation(n)
    n_valid = max(2, round(VALIDATION_FRACTION * n))
    valid, train = order[:n_valid], order[n_valid:]
    train_set = lgb.Dataset(weights[train], target[train], params=params)
    valid_set = lgb.Dataset(weights[valid], target[valid], reference=train_set)
    booster = lgb.train(
        params,
        train_set,
        MAX_ROUNDS,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    return max(1, booster.best_iteration), True


def _check_training_data(
    weights: np.ndarray, scores: np.ndarray, min_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    scores = np.asarray(scores, dtype=float).reshape(-1)
    if len(weights) != len(scores):
        raise ValueError(f"{len(weights)} mixtures but {len(scores)} scores")
    if len(scores) < min_rows:
        raise ValueError(f"{len(scores)} rows: the predictor needs at least {min_rows}")
    if not np.isfinite(weights).all():
        raise ValueError(
            f"mixture row {int(np.argwhere(~np.isfinite(weights))[0, 0]) + 1} is not finite"
        )
    if not np.isfinite(scores).all():
        raise ValueError(
            f"score of row {int(np.flatnonzero(~np.isfinite(scores))[0]) + 1} is not finite"
        )
    return weights, scores


def cross_validated_spearman(
    weights: np.ndarray, scores: np.ndarray, folds: int, seed: int
) -> float:
    """Spearman correlation between out-of-fold predictions and the true scores.

    One correlation over all pooled out-of-fold predictions (defined even for leave-one-out);
    folds = min(folds, n). NaN when either side is constant.
    """
    weights, scores = _check_training_data(weights, scores, MIN_CV_ROWS)
    folds = min(max(2, folds), len(scores))
    if len(scores) - -(-len(scores) // folds) < MIN_FIT_ROWS:
        folds = len(scores)  # too few rows to train on in k-fold: leave one out instead
    order = np.random.default_rng(seed).permutation(len(scores))
    out_of_fold = np.empty(len(scores))
    for held_out in np.array_split(order, folds):
        train = np.setdiff1d(order, held_out)
        model = fit_predictor(weights[train], scores[train], seed)
        out_of_fold[held_out] = model.predict(weights[held_out])
    return spearman(out_of_fold, scores)


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation with ties given their average rank; NaN if a side is constant."""
    ranks_a, ranks_b = average_ranks(first), average_ranks(second)
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return float("nan")
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(np.asarray(values), return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts
    return (first_rank + (counts - 1) / 2)[inverse.reshape(-1)]


def rank_pool(
    predictor: Predictor, pool: np.ndarray, maximize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(order best first, predictions) of a pool of mixtures."""
    _check_direction(predictor, maximize)
    predicted = predictor.predict(pool)
    order = np.argsort(-predicted if maximize else predicted, kind="stable")
    return order, predicted


def best_mixture(
    predictor: Predictor,
    pool: np.ndarray,
    top_k: int,
    maximize: bool,
    constraints: MixtureConstraints | None = None,
) -> BestMixture:
    """RegMix's pick: the mean of the top-k predicted mixtures of `pool`, re-projected.

    The mean of feasible mixtures already meets the caps; projecting again re-applies
    min_weight zeroing (and plain simplex projection when `constraints` is None).
    """
    if len(pool) == 0:
        raise ValueError("the candidate pool is empty")
    order, _ = rank_pool(predictor, pool, maximize)
    top = order[: max(1, top_k)]
    mean = np.asarray(pool, dtype=float)[top].mean(axis=0, keepdims=True)
    if constraints is None:
        mixture = project_to_simplex(mean)[0]
    else:
        mixture = enforce_constraints(mean, constraints)[0]
    return BestMixture(mixture, float(predictor.predict(mixture)[0]), top)


def _check_direction(predictor: Predictor, maximize: bool) -> None:
    if predictor.maximize != maximize:
        wanted, fitted = ("maximize" if m else "minimize" for m in (maximize, predictor.maximize))
        raise ValueError(f"asked to {wanted} but the predictor was fitted to {fitted} its score")
