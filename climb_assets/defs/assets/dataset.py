"""Final stage: the ClimbMix-style dataset sampled in the optimal mixture's proportions.

Sampling reads the kept documents' metadata only; their text then streams into the shards."""

import json
import shutil
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl
import pyarrow.parquet as pq

from climb_assets import __version__
from climb_assets.defs.failures import one_line_failures
from climb_assets.defs.metadata import (
    named,
    parquet_schema,
    report_metadata,
    super_cluster_names_of,
    table,
)
from climb_assets.defs.report import write_report
from climb_assets.defs.resources import ClimbSettings
from climb_assets.defs.shard_state import registered, require_shard_files
from climb_assets.settings import Settings
from climb_assets.store import DATASET_CARD, READ_PER_SHARD, Layout, kept_document_batches

if TYPE_CHECKING:
    from climb_assets.core.dataset.build import SamplingReport

CHECKS = {
    "token_budget_met": "Total tokens within dataset.tolerance (relative) of the token budget.",
    "weights_realized": "Each super-cluster's share of the dataset's tokens within "
    "dataset.tolerance (absolute) of its weight in the optimal mixture.",
    "only_kept_super_clusters": "Every row comes from a kept super-cluster (none pruned, none "
    "without a cluster).",
}


def upstream_runs(instance: dg.DagsterInstance, upstream: Iterable[str]) -> dict[str, str]:
    """The run id of the latest materialization of each upstream asset (any partition)."""
    runs = {}
    for name in upstream:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        runs[name] = event.run_id if event else "never materialized"
    return runs


def spill_metadata(layout: Layout, shards: list[str], batch_docs: int) -> dict[int, Path]:
    """What sampling needs of every kept document of a kept super-cluster (no text), one file per
    super-cluster under `layout.dataset_work` (a crashed run's files are cleared first)."""
    from climb_assets.core.dataset.build import META_COLUMNS, spill_by_super_cluster

    columns = [c for c in META_COLUMNS if c not in ("shard", "row", "cluster", "super_cluster")]
    batches = kept_document_batches(layout, shards, columns, batch_docs, kept_super_clusters=True)
    shutil.rmtree(layout.dataset_work, ignore_errors=True)
    parts = spill_by_super_cluster(batches, layout.dataset_work)
    if not parts:
        raise dg.Failure("climbmix_dataset: no kept document belongs to a kept super-cluster")
    return parts


def sample_from_spill(
    parts: dict[int, Path], weights: dict[int, float], settings: Settings
) -> tuple[pl.DataFrame, "SamplingReport"]:
    """The dataset's rows, sampled one super-cluster's metadata at a time."""
    from climb_assets.core.dataset.build import sample_super_clusters

    unweighted = sum(pq.read_metadata(p).num_rows for s, p in parts.items() if s not in weights)
    sources = {s: partial(pl.read_parquet, p) for s, p in parts.items()}
    conf = settings.dataset
    return sample_super_clusters(
        sources,
        weights,
        conf.token_budget,
        conf.repetition_factor,
        settings.seed,
        excluded_docs=unweighted,
    )


def first_documents(layout: Layout, sampled: pl.DataFrame) -> pl.DataFrame:
    """The first sampled document of each super-cluster with its text, the card's examples: a
    few rows read by row number from their shards, since the dataset's text only streams by."""
    firsts = sampled.group_by("super_cluster", maintain_order=True).first()
    texts = [
        pl.scan_parquet(layout.documents(shard))
        .filter(pl.col("row").is_in(rows["row"].implode()))
        .select(pl.lit(shard).alias("shard"), "row", "text")
        .collect()
        for (shard,), rows in firsts.partition_by("shard", as_dict=True).items()
    ]
    if not texts:
        return firsts.with_columns(pl.lit(None, pl.String).alias("text"))
    return firsts.join(pl.concat(texts), on=["shard", "row"], how="left", maintain_order="left")


def checked_identity(
    context: dg.AssetExecutionContext, layout: Layout, optimal: dict
) -> dict[str, str]:
    """The search's and super-clusters' identities, for the card's lineage; a Failure naming
    what to rematerialize when the search was made on other super-clusters than the current
    ones (its weights are by super-cluster number)."""
    from climb_assets.core.shared.identity import StaleInput, search_identity

    try:
        return search_identity(layout, "climbmix_dataset", context.log.warning, optimal)
    except StaleInput as err:
        raise dg.Failure(description=str(err)) from err


def build_climbmix_dataset(upstream: tuple[str, ...] = ()) -> dg.AssetsDefinition:
    """The dataset asset; `upstream` names the assets whose latest runs its card records (the
    Definitions derive them from the graph: see `graph.dataset_upstream`)."""

    @dg.asset(
        deps=["optimal_mixture", "super_clusters"],
        group_name="dataset",
        kinds={"parquet", "polars"},
        code_version="2",  # 2: the card's lineage records the search's and super-clusters' ids
        check_specs=[
            dg.AssetCheckSpec(name, asset="climbmix_dataset", description=description)
            for name, description in CHECKS.items()
        ],
        description="Documents sampled from the super-clusters in the optimal mixture's "
        "proportions up to the token budget, as data-*.parquet shards with a dataset card "
        "(README.md).",
    )
    @one_line_failures
    def climbmix_dataset(
        context: dg.AssetExecutionContext, climb: ClimbSettings
    ) -> dg.MaterializeResult:
        from climb_assets.core.dataset.card import card_for_ui, mixture_rows, render_card
        from climb_assets.core.dataset.checks import check_budget, check_membership, check_weights
        from climb_assets.core.dataset.writer import write_dataset
        from climb_assets.core.search.targets import metric_of

        settings, layout = climb.resolve()
        conf = settings.dataset
        optimal = json.loads(layout.optimal_mixture.read_text())
        identity = checked_identity(context, layout, optimal)  # before any work: refuse if stale
        # Zero weights stay in: the card then lists every super-cluster, chosen or not.
        weights = {int(k): w for k, w in optimal["weights"].items()}
        shards = registered(context.instance)
        require_shard_files(layout, shards, "climbmix_dataset", *READ_PER_SHARD)
        batch_docs = settings.execution.batch_docs
        sampled, report = sample_from_spill(
            spill_metadata(layout, shards, batch_docs), weights, settings
        )
        shutil.rmtree(layout.dataset_work)
        supers = pl.read_parquet(layout.super_clusters)
        top_terms = dict(zip(supers["super_cluster"], supers["top_terms"].to_list(), strict=True))
        rows = mixture_rows(report, first_documents(layout, sampled), top_terms)
        card = render_card(
            n_docs=sampled.height,
            n_tokens=report.total_tokens,
            n_shards=max(1, -(-sampled.height // conf.rows_per_shard)),
            token_budget=conf.token_budget,
            mixture=rows,
            targets=[
                {**t.model_dump(mode="json"), "metric": metric_of(t)} for t in settings.targets
            ],
            predicted_score=optimal["predicted_objective"],
            lineage={
                "code_version": f"climb-assets {__version__}",
                "settings_hash": settings.fingerprint(),
                "upstream_runs": upstream_runs(context.instance, upstream),
                "dataset_run": context.run.run_id,
                **identity,
            },
            settings=settings.model_dump(mode="json"),
        )
        texts = kept_document_batches(
            layout, shards, ["text"], batch_docs, kept_super_clusters=True
        )
        shards = write_dataset(
            sampled, texts, layout.dataset, conf.rows_per_shard, {DATASET_CARD: card}
        )
        checks = {
            "token_budget_met": check_budget(sampled, conf.token_budget, conf.tolerance),
            "weights_realized": check_weights(sampled, weights, conf.tolerance),
            "only_kept_super_clusters": check_membership(sampled, set(weights)),
        }
        page = write_report(layout)  # the HTML page now shows this result too
        return dg.MaterializeResult(
            metadata={
                "documents": sampled.height,
                "tokens": report.total_tokens,
                "token_budget": conf.token_budget,
                "shards": len(shards),
                "path": dg.MetadataValue.path(str(layout.dataset)),
                "card_path": dg.MetadataValue.path(str(layout.dataset_card)),
                "card": dg.MetadataValue.md(card_for_ui(card, str(layout.dataset_card))),
                "mixture": table(named(report.to_frame(), super_cluster_names_of(supers))),
                "dagster/row_count": sampled.height,
                "dagster/column_schema": parquet_schema(shards[0]),
                **identity,
                **report_metadata(page),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=name,
                    passed=bool(passed),
                    metadata={
                        "details": dg.MetadataValue.json(
                            json.loads(json.dumps(details, default=str))
                        )
                    },
                )
                for name, (passed, details) in checks.items()
            ],
        )

    return climbmix_dataset
