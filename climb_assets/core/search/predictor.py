"""Bagged LightGBM predictor from mixture weights to a proxy score (CLIMB / RegMix).

Regularized as in the paper: L1 + L2, max_depth 4, at least 5 rows per leaf. Adaptations for the
handful of proxies a small run trains, all recorded in `Predictor.info`:
- targets are standardized before fitting, so the L1/L2 penalties mean the same thing whether the
  score is an accuracy near 0.3 or a loss near 4;
- the rows-per-leaf minimum shrinks below 5 when there are fewer than 20 rows (with 8 rows and 5
  per leaf no tree could split, and the predictor would be a constant);
- the round count is chosen once by k-fold cross-validation with early stopping (pooled over
  folds, far steadier than one small held-out split), unless `PredictorSettings.rounds` fixes
  it; with fewer than `MIN_ROWS_CV_ROUNDS` rows folds are too small to trust and
  `FEW_ROWS_ROUNDS` is used;
- `ensemble_size` boosters: member 0 on every row makes the predictions, the others on
  bootstrap resamples give their spread (how sure the predictor is). The bagged mean was tried
  as the prediction: on a dozen rows each resample loses a third of them, and the search found
  optima twice as far away (climb_assets_tests/core/search/test_strategy.py's planted optima);
- a smooth base (`PredictorSettings.smooth_base`): ridge regression from each weight and its
  square to the standardized score, its penalty chosen by exact leave-one-out error, and the
  boosters fit its residuals. Trees need several rows per leaf, so the one run that put a
  super-cluster at its cap cannot move them: a tree-only predictor is flat from the last split
  (say 0.6) to the cap (0.85). The smooth term carries the trend there (data mixing laws: the
  loss moves smoothly with a domain's weight, with diminishing returns, which the square
  term bends), and the trees add the interactions it misses (`core.search.smooth_base`).

Choosing a mixture with the fitted predictor is `core.search.final_choice`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from climb_assets.core.search.smooth_base import RidgeChoice, SmoothBase, choose_ridge, fit_ridge
from climb_assets.core.shared.atomic import write_json, write_text
from climb_assets.settings import PredictorSettings

EARLY_STOPPING_ROUNDS = 50
FEW_ROWS_ROUNDS = 200
MIN_ROWS_CV_ROUNDS = 10
ROUND_SELECTION_FOLDS = 5
# Early stopping on noisy scores can stop after a handful of rounds: a near-constant model that
# cannot rank candidates. A floor keeps some structure; shrinkage still keeps it cautious.
MIN_CV_ROUNDS = 20
PAPER_MIN_ROWS_PER_LEAF = 5
MIN_FIT_ROWS = 3
MIN_CV_ROWS = 4
# Training sets are tiny: one thread is fastest and bit-for-bit reproducible. Prediction of large
# pools benefits from a few threads and its output does not depend on the thread count.
TRAIN_THREADS = 1
PREDICT_THREADS = max(1, min(4, os.cpu_count() or 1))

META_FILE = "predictor.json"
LEGACY_MODEL_FILE = "model.txt"  # single-booster saves from before the ensemble
FORMAT_VERSION = 3  # 3: smooth (ridge) base per member


def member_file(index: int) -> str:
    return f"model-{index:03d}.txt"


@dataclass
class Predictor:
    """Bagged boosters plus what is needed to use them on their own: columns, direction, scaling."""

    boosters: list[lgb.Booster]
    weight_columns: list[str]
    maximize: bool
    target_mean: float
    target_scale: float
    info: dict[str, Any] = field(default_factory=dict)
    smooth: list[SmoothBase] | None = None  # one per booster; None: tree-only

    def _smooth(self, member: int) -> SmoothBase:
        return SmoothBase.zero() if self.smooth is None else self.smooth[member]

    def _member_standardized(self, member: int, weights: np.ndarray) -> np.ndarray:
        trees = self.boosters[member].predict(weights, num_threads=PREDICT_THREADS)
        return np.asarray(trees) + self._smooth(member).predict(weights)

    def _checked(self, weights: np.ndarray) -> np.ndarray:
        weights = np.atleast_2d(np.asarray(weights, dtype=float))
        if weights.shape[1] != len(self.weight_columns):
            raise ValueError(
                f"mixtures have {weights.shape[1]} weights, the predictor expects "
                f"{len(self.weight_columns)} ({', '.join(self.weight_columns)})"
            )
        return weights

    def member_predictions(self, weights: np.ndarray) -> np.ndarray:
        """Each member's predicted scores (members, n), in the units of the training scores."""
        weights = self._checked(weights)
        standardized = np.stack(
            [self._member_standardized(m, weights) for m in range(len(self.boosters))]
        )
        return standardized * self.target_scale + self.target_mean

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """Predicted scores of mixtures (n, k) -> (n,), by the member fitted on every row."""
        weights = self._checked(weights)
        return self._member_standardized(0, weights) * self.target_scale + self.target_mean

    def predict_spread(self, weights: np.ndarray) -> np.ndarray:
        """Standard deviation of the members' predictions (n,); 0 for a one-member ensemble."""
        return self.member_predictions(weights).std(axis=0)

    def feature_importance(self) -> dict[str, float]:
        """Which groups move the score: the trees' split gain averaged over members, plus the
        squared error the smooth base's terms of each group explain on the training rows (both
        sums of squares of the standardized score)."""
        gains = np.mean([b.feature_importance(importance_type="gain") for b in self.boosters], 0)
        gains = gains + np.asarray(self.info.get("smooth_gain") or np.zeros(len(gains)))
        return {name: float(gain) for name, gain in zip(self.weight_columns, gains, strict=True)}

    def save(self, directory: Path) -> None:
        """One LightGBM text file per member, then `predictor.json` naming them. The json goes
        last (and an old one is removed first), so a directory without it is an interrupted
        save."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(f"{directory} is a file: a predictor is saved as a directory")
        (directory / META_FILE).unlink(missing_ok=True)
        files = [member_file(index) for index in range(len(self.boosters))]
        for booster, name in zip(self.boosters, files, strict=True):
            write_text(booster.model_to_string(), directory / name)
        meta = {
            "format_version": FORMAT_VERSION,
            "members": files,
            "weight_columns": self.weight_columns,
            "maximize": self.maximize,
            "target_mean": self.target_mean,
            "target_scale": self.target_scale,
            "info": self.info,
            "smooth": None if self.smooth is None else [b.to_json() for b in self.smooth],
        }
        write_json(meta, directory / META_FILE)

    @classmethod
    def load(cls, directory: Path) -> Predictor:
        directory = Path(directory)
        if not (directory / META_FILE).is_file():
            raise FileNotFoundError(f"{directory / META_FILE} is missing: not a saved predictor")
        meta = json.loads((directory / META_FILE).read_text())
        files = list(meta.get("members", [LEGACY_MODEL_FILE]))
        missing = [name for name in files if not (directory / name).is_file()]
        if missing or not files:
            raise FileNotFoundError(
                f"{directory}: member model file(s) {missing or files} are missing: an "
                "incomplete predictor directory"
            )
        boosters = [lgb.Booster(model_str=(directory / name).read_text()) for name in files]
        return cls(
            boosters=boosters,
            weight_columns=list(meta["weight_columns"]),
            maximize=bool(meta["maximize"]),
            target_mean=float(meta["target_mean"]),
            target_scale=float(meta["target_scale"]),
            info=dict(meta.get("info", {})),
            smooth=[SmoothBase.from_json(b) for b in meta["smooth"]]
            if meta.get("smooth")
            else None,
        )


def lightgbm_params(
    n_rows: int, seed: int, settings: PredictorSettings | None = None
) -> dict[str, Any]:
    """The paper's regularized, deterministic regression setup, sized for `n_rows`."""
    settings = settings or PredictorSettings()
    return {
        "objective": "regression",
        "learning_rate": settings.learning_rate,
        "max_depth": 4,
        "num_leaves": settings.num_leaves,
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
    settings: PredictorSettings | None = None,
) -> Predictor:
    """Fit the bagged predictor on mixtures (n, k) and their scores (n,); `maximize` is recorded.

    Deterministic for a given `seed`: bootstrap draws come from SeedSequence([seed, member])."""
    settings = settings or PredictorSettings()
    if settings.ensemble_size < 1:
        raise ValueError(f"ensemble_size must be at least 1, got {settings.ensemble_size}")
    weights, scores = _check_training_data(weights, scores, MIN_FIT_ROWS)
    columns = weight_columns or [f"w_{index}" for index in range(weights.shape[1])]
    if len(columns) != weights.shape[1]:
        raise ValueError(f"{len(columns)} weight column names for {weights.shape[1]} columns")
    mean, scale = float(scores.mean()), float(scores.std()) or 1.0
    target = (scores - mean) / scale
    params = lightgbm_params(len(scores), seed, settings)
    ridge = choose_ridge(weights, target) if settings.smooth_base else RidgeChoice(0, None, 1.0)
    residual = target - fit_ridge(weights, target, ridge).predict(weights)
    rounds, selection = choose_rounds(weights, residual, params, seed, settings)
    boosters, smooth = [], []
    for member in range(settings.ensemble_size):
        rows = _bootstrap_rows(len(scores), seed, member)
        base = fit_ridge(weights[rows], target[rows], ridge)
        member_params = params | {"seed": seed + member}
        member_target = target[rows] - base.predict(weights[rows])
        train_set = lgb.Dataset(weights[rows], member_target, params=member_params)
        boosters.append(lgb.train(member_params, train_set, rounds))
        smooth.append(base)
    info = {
        "n_rows": len(scores),
        "rounds": rounds,
        "round_selection": selection,
        "members": settings.ensemble_size,
        "learning_rate": settings.learning_rate,
        "num_leaves": settings.num_leaves,
        "min_data_in_leaf": params["min_data_in_leaf"],
        "seed": seed,
        "smooth_base": settings.smooth_base,
        "smooth_degree": ridge.degree,
        "ridge_penalty": ridge.penalty,
        "ridge_loo_rmse": ridge.loo_rmse,  # standardized units: about 1 for the mean alone
        "smooth_gain": _explained(smooth[0], weights).tolist() if ridge.degree else None,
    }
    bases = smooth if settings.smooth_base else None
    return Predictor(boosters, list(columns), maximize, mean, scale, info, bases)


def _explained(base: SmoothBase, weights: np.ndarray) -> np.ndarray:
    """Per group, the sum of squares of its centred contribution to the smooth base."""
    return (base.contributions(weights) ** 2).sum(axis=0)


def _bootstrap_rows(n: int, seed: int, member: int) -> np.ndarray:
    """Member 0 sees every row once (the plain fit); the others a seeded bootstrap resample."""
    if member == 0:
        return np.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence([seed, member]))
    return np.sort(rng.integers(0, n, n))


def choose_rounds(
    weights: np.ndarray,
    target: np.ndarray,
    params: dict[str, Any],
    seed: int,
    settings: PredictorSettings,
) -> tuple[int, str]:
    """(rounds, how they were chosen): fixed by the settings, fixed for too few rows, or k-fold
    cross-validation with early stopping on the mean fold loss, capped at `max_rounds`."""
    if settings.rounds is not None:
        return max(1, settings.rounds), "settings"
    n = len(target)
    if n < MIN_ROWS_CV_ROUNDS:
        return min(FEW_ROWS_ROUNDS, settings.max_rounds), "fixed (too few rows)"
    order = np.random.default_rng(np.random.SeedSequence([seed, 1_000_003])).permutation(n)
    folds = [
        (np.setdiff1d(order, held_out), np.sort(held_out))
        for held_out in np.array_split(order, min(ROUND_SELECTION_FOLDS, n))
    ]
    history = lgb.cv(
        params,
        lgb.Dataset(weights, target, params=params),
        num_boost_round=settings.max_rounds,
        folds=folds,
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    best = len(next(iter(history.values())))  # lgb.cv truncates the history at the best round
    return min(settings.max_rounds, max(best, MIN_CV_ROUNDS)), "cross_validation"


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
    weights: np.ndarray,
    scores: np.ndarray,
    folds: int,
    seed: int,
    settings: PredictorSettings | None = None,
) -> float:
    """Spearman correlation between out-of-fold predictions and the true scores.

    One correlation over all pooled out-of-fold predictions (defined even for leave-one-out);
    folds = min(folds, n). Each fold refits the whole predictor, round choice included, so the
    figure measures what the search uses. NaN when either side is constant.
    """
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    weights, scores = _check_training_data(weights, scores, MIN_CV_ROWS)
    folds = min(folds, len(scores))
    if len(scores) - -(-len(scores) // folds) < MIN_FIT_ROWS:
        folds = len(scores)  # too few rows to train on in k-fold: leave one out instead
    order = np.random.default_rng(seed).permutation(len(scores))
    out_of_fold = np.empty(len(scores))
    for held_out in np.array_split(order, folds):
        train = np.setdiff1d(order, held_out)
        model = fit_predictor(weights[train], scores[train], seed, settings=settings)
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
