"""The predictor's smooth base: ridge regression from each mixture weight (and its square) to
the standardized score, its degree and penalty chosen by exact leave-one-out error. The boosters
of `core.search.predictor` fit what it leaves; it carries the trend where trees cannot split
(a super-cluster that only one run put at its cap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Ridge penalties tried for the smooth base (weights are in [0, 1], the target standardized).
RIDGE_PENALTIES = np.logspace(-3, 2, 11)


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
