"""Search stage, the round's views: the candidates, proxy scores and predictor that one
`bootstrap_iteration` computed, each published as its own partitioned asset with its checks, so
the UI shows them (and their history across rounds) apart from the round that made them.
"""

import dagster as dg
import numpy as np
import polars as pl

from climb_assets.defs.failures import one_line_failures
from climb_assets.defs.graph import PUBLISHES_TAG
from climb_assets.defs.metadata import (
    or_na,
    plot,
    rounded,
    super_cluster_names_of,
    table,
    weight_name,
    with_names,
)
from climb_assets.defs.resources import ClimbSettings
from climb_assets.store import read_runs, read_summary


def build_publishing_assets(partitions: dg.TimeWindowPartitionsDefinition) -> list:
    """The round's candidates, proxy scores and predictor, each its own partitioned asset."""
    common = {
        "partitions_def": partitions,
        "group_name": "search",
        "code_version": "1",
        "tags": {PUBLISHES_TAG: "bootstrap_iteration"},  # they show what the round computed
    }

    @dg.asset(
        deps=["bootstrap_iteration"],
        kinds={"parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                "weights_on_simplex",
                asset="mixture_candidates",
                description="Every candidate's weights are non-negative and sum to 1.",
            )
        ],
        description="The mixtures proposed in this round (weights per super-cluster).",
        **common,
    )
    @one_line_failures
    def mixture_candidates(context: dg.AssetExecutionContext, climb: ClimbSettings):
        _, layout = climb.resolve()
        runs = read_runs(layout, context.partition_key)
        weights = runs.select(pl.col("^w_\\d+$")).to_numpy()
        on_simplex = bool(np.all(weights >= 0) and np.allclose(weights.sum(axis=1), 1, atol=1e-6))
        return dg.MaterializeResult(
            metadata={
                "candidates": runs.height,
                "by_source": dg.MetadataValue.json(dict(runs["source"].value_counts().iter_rows())),
                "dagster/row_count": runs.height,
                "table": table(
                    with_names(
                        runs.select("candidate_id", "source", pl.col("^w_\\d+$")),
                        super_cluster_names_of(layout.super_clusters),
                    ),
                    64,
                ),
            },
            check_results=[dg.AssetCheckResult(check_name="weights_on_simplex", passed=on_simplex)],
        )

    @dg.asset(
        deps=[mixture_candidates],
        kinds={"pytorch"},
        check_specs=[
            dg.AssetCheckSpec(
                "scores_finite",
                asset="proxy_scores",
                description="Every proxy's metrics and objective are finite numbers.",
            )
        ],
        description="Each proxy's target metrics and the combined objective (higher is better), "
        "with its training loss curve.",
        **common,
    )
    @one_line_failures
    def proxy_scores(context: dg.AssetExecutionContext, climb: ClimbSettings):
        from climb_assets.core.shared.plots import loss_curves

        _, layout = climb.resolve()
        key = context.partition_key
        runs = read_runs(layout, key)
        curves = pl.read_parquet(layout.loss_curves(key))
        metric_columns = [c for c in runs.columns if "/" in c or c == "objective"]
        # Successive halving: a stopped candidate's metrics are its rung's (on a share of each
        # target), its objective an estimate.
        halving = [c for c in ("proxy_tokens", "rung_objective", "estimated") if c in runs.columns]
        chart = loss_curves(curves, key)
        finite = bool(np.isfinite(runs.select(metric_columns).to_numpy()).all())
        return dg.MaterializeResult(
            metadata={
                "objective_direction": "higher is better",
                "best_objective": rounded(runs["objective"].max()),
                "mean_objective": rounded(runs["objective"].mean()),
                "dagster/row_count": runs.height,
                "scores": table(runs.select("candidate_id", *metric_columns, *halving), 64),
                **({} if chart is None else {"loss_curves": plot(chart, "proxy loss curves")}),
            },
            check_results=[dg.AssetCheckResult(check_name="scores_finite", passed=finite)],
        )

    @dg.asset(
        deps=[proxy_scores],
        kinds={"lightgbm"},
        description="LightGBM regressor from mixture weights to the objective over a ridge base "
        "on the weights and their squares, fitted on every proxy run up to this round; k-fold "
        "Spearman and feature importances.",
        **common,
    )
    @one_line_failures
    def mixture_predictor(context: dg.AssetExecutionContext, climb: ClimbSettings):
        from climb_assets.core.search.predictor import Predictor

        _, layout = climb.resolve()
        key = context.partition_key
        directory = layout.predictor(key)
        predictor = Predictor.load(directory)
        summary = read_summary(layout, key)
        names = super_cluster_names_of(layout.super_clusters)
        gains = predictor.feature_importance()
        importance = pl.DataFrame(
            {
                "super_cluster": [weight_name(feature, names) for feature in gains],
                "gain": list(gains.values()),
            }
        ).sort("gain", descending=True)
        return dg.MaterializeResult(
            metadata={
                "cv_spearman": or_na(summary["cv_spearman"]),
                "training_rows": summary["predictor_rows"],
                # 0: trees alone; 1 or 2: a ridge base on the weights (and their squares).
                "smooth_base_degree": predictor.info.get("smooth_degree", 0),
                "smooth_base_loo_rmse": or_na(predictor.info.get("ridge_loo_rmse")),
                "feature_importance": table(importance),
                "path": dg.MetadataValue.path(str(directory)),
            }
        )

    return [mixture_candidates, proxy_scores, mixture_predictor]
