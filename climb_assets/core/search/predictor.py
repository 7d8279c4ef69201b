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
  term bends), and the trees add the interactions it misses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import lightgbm as lgb
import numpy as np

from climb_assets.core.search.mixtures import MixtureConstraints, enforce_constraints
from climb_assets.core.search.trust_region import TrustRegion, TrustReport
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
# Ridge penalties tried for the smooth base (weights are in [0, 1], the target standardized).
RIDGE_PENALTIES = np.logspace(-3, 2, 11)


def member_file(index: int) -> str:
    return f"model-{index:03d}.txt"


def smooth_features(weights: np.ndarray, degree: int) -> np.ndarray:
    """Each weight (degree 1), and its square (degree 2): enough for a score that rises with
    diminishing returns toward a cap, or peaks inside the simplex, per super-cluster."""
    return np.hstack([weights**power for power in range(1, degree + 1)])


@dataclass(frozen=True)
class SmoothBase:
    """Standardized score ~ intercept + smooth_features(weights, degree) @ coef (ridge); no
    terms at all (degree 0) when no ridge fit beat the plain mean in leave-one-out error."""

    intercept: float
    coef: np.ndarray  # (degree * k,): k linear, then k squared terms
    degree: int

    @classmethod
    def zero(cls) -> SmoothBase:
        return cls(0.0, np.zeros(0), 0)

    def predict(self, weights: np.ndarray) -> np.ndarray:
        if self.degree == 0:
            return np.full(len(weights), self.intercept)
        return self.intercept + smooth_features(weights, self.degree) @ self.coef

    def contributions(self, weights: np.ndarray) -> np.ndarray:
        """(n, k): each group's part of the prediction (all its terms), centred."""
        k = weights.shape[1]
        parts = np.zeros_like(weights)
        for power in range(1, self.degree + 1):
            parts += weights**power * self.coef[(power - 1) * k : power * k]
        return parts - parts.mean(axis=0)

    def to_json(self) -> dict[str, Any]:
        return {"intercept": self.intercept, "coef": self.coef.tolist(), "degree": self.degree}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SmoothBase:
        return cls(float(data["intercept"]), np.asarray(data["coef"], float), int(data["degree"]))


@dataclass(frozen=True)
class RidgeChoice:
    degree: int  # 0: no smooth base
    penalty: float | None
    loo_rmse: float  # leave-one-out RMSE in standardized units (the mean alone: about 1)


def fit_ridge(weights: np.ndarray, target: np.ndarray, choice: RidgeChoice) -> SmoothBase:
    """Ridge regression on `smooth_features`, with an unpenalized intercept (columns centred)."""
    if choice.degree == 0 or choice.penalty is None:
        return SmoothBase(float(target.mean()), np.zeros(0), 0)
    features = smooth_features(weights, choice.degree)
    x_mean, y_mean = features.mean(axis=0), float(target.mean())
    x = features - x_mean
    gram = x.T @ x + choice.penalty * np.eye(x.shape[1])
    coef = np.linalg.solve(gram, x.T @ (target - y_mean))
    return SmoothBase(y_mean - float(x_mean @ coef), coef, choice.degree)


def choose_ridge(weights: np.ndarray, target: np.ndarray) -> RidgeChoice:
    """The simplest ridge fit within one standard error of the least exact leave-one-out error
    (residual_i / (1 - H_ii), H the hat matrix of the centred design plus intercept): lowest
    degree first (0: the mean alone, no base), then the largest penalty. With few rows the
    squares, and small penalties, overfit, and their argmax lands far from every run."""
    n = len(target)
    centred = (target - target.mean()) * n / (n - 1)  # exact leave-one-out residuals of the mean
    fits = [(0, None, centred**2)]
    for degree in (1, 2):
        features = smooth_features(weights, degree)
        x = features - features.mean(axis=0)
        for penalty in RIDGE_PENALTIES:
            inverse = np.linalg.inv(x.T @ x + penalty * np.eye(x.shape[1]))
            hat = x @ inverse @ x.T + 1.0 / n
            leverage = np.clip(1.0 - np.diag(hat), 1e-9, None)
            fits.append((degree, float(penalty), ((target - hat @ target) / leverage) ** 2))
    best = min(fits, key=lambda fit: fit[2].mean())
    bar = best[2].mean() + best[2].std() / np.sqrt(n)
    simplest = min(
        (fit for fit in fits if fit[2].mean() <= bar),
        key=lambda fit: (fit[0], -(fit[1] or 0.0)),
    )
    return RidgeChoice(simplest[0], simplest[1], float(np.sqrt(simplest[2].mean())))


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


def rank_pool(
    predictor: Predictor, pool: np.ndarray, maximize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(order best first, predictions) of a pool of mixtures."""
    _check_direction(predictor, maximize)
    predicted = predictor.predict(pool)
    order = np.argsort(-predicted if maximize else predicted, kind="stable")
    return order, predicted


class BestMixture(NamedTuple):
    mixture: np.ndarray  # (k,)
    predicted: float  # predictor's score of `mixture` itself
    top_indices: np.ndarray  # rows of the pool that were averaged, best first


def best_mixture(
    predictor: Predictor,
    pool: np.ndarray,
    top_k: int,
    maximize: bool,
    constraints: MixtureConstraints | None = None,
) -> BestMixture:
    """RegMix's plain pick: the mean of the top-k predicted mixtures of `pool`, re-projected.

    Kept for comparisons; `choose_final` is the search's final choice (no blending of separate
    regions, never worse than the best observed run).
    """
    if len(pool) == 0:
        raise ValueError("the candidate pool is empty")
    order, _ = rank_pool(predictor, pool, maximize)
    top = order[: max(1, top_k)]
    mixture = _project(np.asarray(pool, dtype=float)[top].mean(axis=0), constraints)
    return BestMixture(mixture, float(predictor.predict(mixture)[0]), top)


@dataclass
class FinalChoice:
    mixture: np.ndarray  # (k,)
    predicted: float  # predictor's score of `mixture`
    method: str  # "region mean", "best predicted" or "best observed"
    region_size: int  # top-k mixtures averaged
    best_observed_weights: np.ndarray  # (k,) the run with the best real score
    best_observed_score: float
    best_observed_predicted: float  # same predictor's score of the best observed run
    top_indices: np.ndarray  # rows of [pool; observed] in the top-k, best first
    kept_slivers: bool = False  # weights under min_weight kept: predicted better with them
    trust: TrustReport | None = None  # the trust region applied, and what lay outside it


def choose_final(
    predictor: Predictor,
    pool: np.ndarray,
    observed_weights: np.ndarray,
    observed_scores: np.ndarray,
    top_k: int,
    maximize: bool,
    constraints: MixtureConstraints | None = None,
    region_radius: float = 0.3,
    *,
    min_weight: float = 0.0,
    compare_to_pool: bool = False,
    trust: TrustRegion | None = None,
) -> FinalChoice:
    """The final mixture: mean of the top-k predicted of the pool plus the observed runs, taken
    only within total-variation distance `region_radius` of the best predicted one.

    Averaging smooths the predictor's noise, but the mean of two separate good regions can lie
    in a bad valley between them, hence the radius. Averaging also leaves dust: every group
    some top-k member touched gets a sliver, so weights below `min_weight` are zeroed and the
    rest re-projected onto the caps (skipped where the caps would then not reach 1), unless the
    predictor scores the mean with its slivers higher. The mean is kept unless it is predicted
    worse than the best observed run, which is then returned: the choice is never predicted
    worse than what was already seen.

    `compare_to_pool=True` also falls back to the best predicted candidate when it beats the
    mean. Off by default: the top pool member's prediction is the maximum of many noisy
    predictions, so the mean nearly always loses to it, and in benchmarks/predictor_quality.py
    that fallback chose worse mixtures than the mean.

    `trust` (a region around `observed_weights`): when it is enforced, candidates outside are
    left out, and a mean that falls outside gives way to the best predicted candidate inside;
    either way `FinalChoice.trust` reports where the best predicted candidate of the whole pool
    lay.
    """
    _check_direction(predictor, maximize)
    observed = np.atleast_2d(np.asarray(observed_weights, dtype=float))
    observed_scores = np.asarray(observed_scores, dtype=float).reshape(-1)
    if len(observed) == 0 or len(observed) != len(observed_scores):
        raise ValueError(
            f"{len(observed)} observed mixtures and {len(observed_scores)} scores: need the "
            "same non-zero number"
        )
    pool = np.asarray(pool, dtype=float).reshape(-1, observed.shape[1])
    candidates = np.vstack([pool, observed])
    order, predicted = rank_pool(predictor, candidates, maximize)
    overall_best = int(order[0])
    inside = None if trust is None else trust.inside(candidates)
    if inside is not None and trust is not None and trust.enforce:
        order = order[inside[order]]  # observed runs are inside: never empty
    top = order[: max(1, top_k)]
    best = int(top[0])
    distance = 0.5 * np.abs(candidates[top] - candidates[best]).sum(axis=1)
    region = top[distance <= region_radius]
    mixture, mixture_predicted, kept_slivers = _sparse_or_dense(
        predictor, candidates[region].mean(axis=0), constraints, min_weight, maximize
    )
    method = "region mean"
    if trust is not None and trust.enforce and not trust.inside(mixture)[0]:
        mixture, mixture_predicted = candidates[best].copy(), float(predicted[best])
        method, kept_slivers = "best predicted", False
    observed_best = int(np.argmax(observed_scores) if maximize else np.argmin(observed_scores))
    observed_best_row = len(pool) + observed_best
    rival = best if compare_to_pool else observed_best_row
    gap = mixture_predicted - predicted[rival]
    if gap < 0 if maximize else gap > 0:
        mixture, mixture_predicted = candidates[rival].copy(), float(predicted[rival])
        method = "best observed" if rival == observed_best_row else "best predicted"
        kept_slivers = False
    report = None
    if trust is not None and inside is not None:
        report = TrustReport(
            multiple=trust.multiple,
            spacing=trust.spacing,
            radius=trust.radius,
            enforced=trust.enforce,
            excluded=int((~inside).sum()) if trust.enforce else 0,
            best_predicted=candidates[overall_best].copy(),
            best_predicted_score=float(predicted[overall_best]),
            best=trust.excursion(candidates[overall_best]),
            chosen=trust.excursion(mixture),
        )
    return FinalChoice(
        mixture=mixture,
        predicted=mixture_predicted,
        method=method,
        region_size=len(region),
        best_observed_weights=observed[observed_best].copy(),
        best_observed_score=float(observed_scores[observed_best]),
        best_observed_predicted=float(predicted[observed_best_row]),
        top_indices=top,
        kept_slivers=kept_slivers,
        trust=report,
    )


def _sparse_or_dense(
    predictor: Predictor,
    mean: np.ndarray,
    constraints: MixtureConstraints | None,
    min_weight: float,
    maximize: bool,
) -> tuple[np.ndarray, float, bool]:
    """The mean without its slivers, unless the predictor scores the mean with them higher
    (then the third item is True: slivers kept)."""
    options = [_project(mean, constraints, min_weight), _project(mean, constraints)]
    scores = predictor.predict(np.stack(options))
    better_dense = bool(scores[1] > scores[0] if maximize else scores[1] < scores[0])
    kept = better_dense and not np.array_equal(options[0], options[1])
    return options[int(better_dense)], float(scores[int(better_dense)]), kept


def _project(
    mean: np.ndarray, constraints: MixtureConstraints | None, min_weight: float = 0.0
) -> np.ndarray:
    """The mean of feasible mixtures already meets the caps; projecting again zeroes weights
    below the larger of `min_weight` and the constraints' own (whole simplex when
    `constraints` is None)."""
    if constraints is None:
        constraints = MixtureConstraints.unconstrained(len(mean))
    floor = max(min_weight, constraints.min_weight)
    return enforce_constraints(mean[None], replace(constraints, min_weight=floor))[0]


def _check_direction(predictor: Predictor, maximize: bool) -> None:
    if predictor.maximize != maximize:
        wanted, fitted = ("maximize" if m else "minimize" for m in (maximize, predictor.maximize))
        raise ValueError(f"asked to {wanted} but the predictor was fitted to {fitted} its score")
