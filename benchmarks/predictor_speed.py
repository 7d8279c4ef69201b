"""Predictor speed: fit time by number of runs, scoring of a 100k-mixture pool, pool sampling.

Run: .venv/bin/python benchmarks/predictor_speed.py [--groups 20] [--pool 100000]
Prints seconds; figures are rough on a shared machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from climb_assets.core.search.final_choice import best_mixture
from climb_assets.core.search.mixtures import MixtureConstraints, sample_around, sample_dirichlet
from climb_assets.core.search.predictor import (
    PREDICT_THREADS,
    cross_validated_spearman,
    fit_predictor,
)

T = TypeVar("T")


def timed(action: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", type=int, default=20, help="super-clusters (paper: 16-21)")
    parser.add_argument("--pool", type=int, default=100_000, help="mixtures scored")
    args = parser.parse_args()

    constraints = MixtureConstraints.unconstrained(args.groups)
    target = sample_dirichlet(constraints, 1, seed=99)[0]
    runs = sample_dirichlet(constraints, 1024, seed=0)
    scores = -((runs - target) ** 2).sum(axis=1)
    print(f"groups={args.groups}  predict threads={PREDICT_THREADS}")

    for n in (16, 64, 112, 256, 1024):
        predictor, seconds = timed(lambda n=n: fit_predictor(runs[:n], scores[:n], seed=0))
        print(f"fit      {n:5d} runs: {seconds:6.3f} s  ({predictor.info['rounds']} rounds)")
    _, seconds = timed(lambda: cross_validated_spearman(runs[:112], scores[:112], 5, seed=0))
    print(f"5-fold cv  112 runs: {seconds:6.3f} s")

    fresh, fresh_s = timed(lambda: sample_dirichlet(constraints, args.pool // 2, seed=1))
    around, around_s = timed(
        lambda: sample_around(runs[:32], args.pool - args.pool // 2, constraints, seed=2)
    )
    pool = np.vstack([fresh, around])
    print(f"pool sampling {len(pool):,}: dirichlet {fresh_s:.3f} s + around {around_s:.3f} s")

    predictor = fit_predictor(runs[:112], scores[:112], seed=0)
    _, predict_s = timed(lambda: predictor.predict(pool))
    print(f"predict {len(pool):,} mixtures: {predict_s:.3f} s ({len(pool) / predict_s:,.0f}/s)")
    best, best_s = timed(lambda: best_mixture(predictor, pool, top_k=128, maximize=True))
    distance = np.linalg.norm(best.mixture - target)
    print(f"best_mixture top-128 of {len(pool):,}: {best_s:.3f} s (distance to w* {distance:.3f})")


if __name__ == "__main__":
    main()
