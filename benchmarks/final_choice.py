"""The optimal mixture with and without the sliver floor (search.final_min_weight), re-chosen
from finished searches without training anything.

    .venv/bin/python benchmarks/final_choice.py benchmarks/results/search_quality/*/climb.yaml

Each argument is the config of a finished `climb run` (benchmarks/search_quality.py writes
one per target domain). Prints, per floor, the choice method, the predicted objective of the
chosen mixture and of the best observed run (same predictor), and the non-zero weights.
"""

from __future__ import annotations

import argparse

import numpy as np

from climb_assets.core.search.mixtures import constraint_budget
from climb_assets.core.search.strategy import choose_optimal_mixture
from climb_assets.settings import load_settings
from climb_assets.store import Layout, corpus_token_counts, iteration_runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="climb.yaml of finished searches")
    parser.add_argument("--floors", type=float, nargs="+", default=[0.0, 0.01])
    args = parser.parse_args()
    print("config | floor | method | predicted | best observed predicted | non-zero | weights")
    for config in args.configs:
        settings = load_settings(config)
        layout = Layout(settings.output_dir)
        history = iteration_runs(layout, settings.iterations + 1)
        if history is None:
            print(f"{config}: no finished iterations")
            continue
        counts = corpus_token_counts(layout, settings)
        for floor in args.floors:
            search = settings.search.model_copy(update={"final_min_weight": floor})
            best = choose_optimal_mixture(
                history, counts, search, constraint_budget(settings), settings.seed,
                maximize=True, predictor_settings=settings.predictor,
            )  # fmt: skip
            weights = np.round(best.weights, 3)
            print(
                f"{config} | {floor:g} | {best.choice.method} | {best.predicted:.4f} | "
                f"{best.choice.best_observed_predicted:.4f} | {(weights > 0).sum()} | "
                f"{weights.tolist()}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
