"""Clustering stage: embeddings (per shard) -> centroids -> assignments (per shard) ->
cluster profiles -> super-clusters (pruned and merged). The per-shard work the corpus-wide
assets map over shards is in `defs/clustering_tasks.py`."""

import shutil
import time
from functools import lru_cache, partial
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from climb_assets.core.shared.atomic import write_npy, write_parquet
from climb_assets.defs.automation import eager_after
from climb_assets.defs.clustering_tasks import (
    assign_and_write,
    profile_accumulator,
    profile_shard,
    term_fractions,
)
from climb_assets.defs.failures import one_line_failures
from climb_assets.defs.metadata import (
    fine_cluster_label,
    named,
    plot,
    super_cluster_examples,
    super_cluster_names_of,
    table,
    table_metadata,
)
from climb_assets.defs.partitions import CORPUS_SHARDS
from climb_assets.defs.resources import ClimbSettings
from climb_assets.defs.shard_state import (
    INPUT_FINGERPRINT,
    SHARD_CODE_VERSION,
    map_shards,
    registered,
    require_shard_files,
    shard_input_fingerprint,
)
from climb_assets.settings import EmbeddingSettings, Settings
from climb_assets.store import (
    READ_PER_SHARD,
    Layout,
    load_embeddings,
)

EMBEDDINGS_FINITE_UNIT_NORM = "finite_unit_norm"


@lru_cache(maxsize=2)
def _encoder(settings_json: str):  # noqa: ANN202 - a SentenceTransformer
    """One encoder per process and setting: `climb run` embeds every shard in one process."""
    from climb_assets.core.clustering.encoder import load_encoder

    return load_encoder(EmbeddingSettings.model_validate_json(settings_json))


def shared_encoder(settings: EmbeddingSettings):  # noqa: ANN201 - a SentenceTransformer
    """This process's encoder for `settings`, loaded once (`climb run`'s estimate and its
    embedding steps share it)."""
    return _encoder(settings.model_dump_json())


@dg.asset(
    partitions_def=CORPUS_SHARDS,
    deps=["corpus_documents"],
    group_name="clustering",
    kinds={"pytorch", "numpy"},
    code_version=SHARD_CODE_VERSION,
    pool="gpu",
    check_specs=[
        dg.AssetCheckSpec(
            EMBEDDINGS_FINITE_UNIT_NORM,
            asset="shard_embeddings",
            description="Every vector is finite and of unit L2 norm (within float16 rounding), "
            "one per document of the shard.",
        )
    ],
    description="L2-normalized float16 sentence embeddings of one shard's documents, in document "
    "order, stored as .npy and memory-mapped on read.",
)
@one_line_failures
def shard_embeddings(
    context: dg.AssetExecutionContext, climb: ClimbSettings
) -> dg.MaterializeResult:
    from climb_assets.core.clustering.embedding import embedding_health

    settings, layout = climb.resolve()
    shard = context.partition_key
    started = time.perf_counter()
    where = _embed(layout.documents(shard), layout.embeddings(shard), settings)
    seconds = time.perf_counter() - started  # reading texts and writing vectors included
    vectors = np.load(layout.embeddings(shard), mmap_mode="r")
    documents = int(vectors.shape[0])
    health = embedding_health(vectors)
    fingerprint = shard_input_fingerprint(settings, shard)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(fingerprint),
        metadata={
            INPUT_FINGERPRINT: fingerprint,
            "documents": documents,
            "dagster/row_count": documents,
            "dimension": int(vectors.shape[1]),
            "encode_seconds": round(seconds, 2),
            "docs_per_second": round(documents / seconds, 1) if seconds else 0.0,
            **where,
            "path": dg.MetadataValue.path(str(layout.embeddings(shard))),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=EMBEDDINGS_FINITE_UNIT_NORM,
                passed=bool(health["healthy"]),
                metadata={"health": dg.MetadataValue.json(health)},
            )
        ],
    )


def _embed(documents: Path, path: Path, settings: Settings) -> dict:
    """Embed the shard's `documents` into the .npy `path` on the configured backend, streaming
    chunk by chunk; metadata on where the vectors were made."""
    from climb_assets.core.clustering.embedding import (
        document_count,
        encode_file,
        encode_file_on_ray,
    )
    from climb_assets.core.clustering.encoder import encoder_info
    from climb_assets.core.shared.execution import ExecutionError, TasksFailed

    execution = settings.execution
    # An empty shard is embedded here: the width of its (0, d) array needs a loaded encoder.
    if execution.backend == "ray" and document_count(documents):
        try:
            workers = encode_file_on_ray(documents, path, settings.embedding, execution)
        except (ExecutionError, TasksFailed) as err:
            raise dg.Failure(f"shard_embeddings on Ray: {err}") from err
        names = sorted({f"{w['host']}:{w['pid']} ({w['device']})" for w in workers})
        return {
            "execution_backend": "ray",
            "chunks": len(workers),
            "workers": dg.MetadataValue.json(names),
            "nodes": dg.MetadataValue.json(sorted({w["node"] for w in workers})),  # Ray node ids
        }
    model = shared_encoder(settings.embedding)
    encode_file(model, documents, path, settings.embedding.batch_size)
    return {
        "execution_backend": "local",
        "encoder": dg.MetadataValue.json(encoder_info(model)),
    }


@dg.asset(
    deps=[shard_embeddings, "document_index"],
    automation_condition=dg.AutomationCondition.eager(),
    group_name="clustering",
    kinds={"numpy"},
    code_version="1",
    pool="gpu",
    description="faiss K-means centroids fitted on a bounded, seeded sample of all shards' "
    "embeddings (memory does not grow with the corpus).",
)
@one_line_failures
def centroids(context: dg.AssetExecutionContext, climb: ClimbSettings) -> dg.MaterializeResult:
    from climb_assets.core.clustering.kmeans import fit_kmeans, gpu_available, sample_for_fit

    settings, layout = climb.resolve()
    conf = settings.clustering
    shards = registered(context.instance)
    require_shard_files(layout, shards, "centroids", "corpus_documents", "shard_embeddings")
    sample = sample_for_fit(
        load_embeddings(layout, shards), conf.sample_size, settings.seed, shards
    )
    started = time.perf_counter()
    fitted = fit_kmeans(sample, conf.k, conf.niter, settings.seed, conf.use_gpu)
    seconds = time.perf_counter() - started
    write_npy(fitted, layout.centroids)
    if fitted.shape[0] < conf.k:
        context.log.warning(f"only {sample.shape[0]} points: k reduced to {fitted.shape[0]}")
    return dg.MaterializeResult(
        metadata={
            "k": int(fitted.shape[0]),
            "fit_sample": int(sample.shape[0]),
            "fit_seconds": round(seconds, 2),
            "gpu": gpu_available(conf.use_gpu),
        }
    )


@dg.asset(
    deps=[shard_embeddings, centroids],
    automation_condition=eager_after("centroids"),
    group_name="clustering",
    kinds={"numpy", "parquet"},
    code_version="1",
    description="Nearest centroid and Euclidean distance of every document, one file per "
    "shard, computed in chunks. Corpus-wide: new centroids reassign every shard, and keeping "
    "it unpartitioned lets automation run the clustering chain as one ordered run.",
)
@one_line_failures
def cluster_assignments(
    context: dg.AssetExecutionContext, climb: ClimbSettings
) -> dg.MaterializeResult:
    settings, layout = climb.resolve()
    shards = registered(context.instance)
    require_shard_files(
        layout, shards, "cluster_assignments", "corpus_documents", "shard_embeddings"
    )
    layout = Layout(layout.root.resolve())  # a Ray worker's working directory is another
    assign = partial(assign_and_write, layout, settings)
    per_shard = map_shards(assign, shards, settings, layout, "cluster_assignments")
    summary = pl.DataFrame(per_shard)
    return dg.MaterializeResult(
        metadata={
            "shards": summary.height,
            "documents": int(summary["documents"].sum()),
            "dagster/row_count": int(summary["documents"].sum()),
            "by_shard": table(summary),
        }
    )


def _profile_shards(
    layout: Layout, settings: Settings, shards: list[str]
) -> tuple[pl.DataFrame, int, int]:
    """Every shard profiled on its own (`profile_shard`) and the partials merged: the profiles,
    the documents counted and, of those, the ones without a cluster."""
    from climb_assets.core.clustering.clusters import ProfilePartial

    k = int(np.load(layout.centroids).shape[0])
    # Shards in the order the stream reads them: merged in that order, floats sum the same way
    # on every backend.
    fractions = term_fractions(layout, shards, settings)
    profile = partial(profile_shard, layout, settings, k, fractions)
    shutil.rmtree(layout.profiles_work, ignore_errors=True)  # a crashed run's partials
    parts = map_shards(profile, sorted(shards), settings, layout, "cluster_profiles")
    accumulator = profile_accumulator(settings, k, fractions)
    for part in parts:  # one shard's partial in memory at a time
        accumulator.merge(ProfilePartial.load(part.folder))
    shutil.rmtree(layout.profiles_work, ignore_errors=True)
    documents = sum(part.documents for part in parts)
    unassigned = sum(part.unassigned for part in parts)
    return accumulator.result(), documents, unassigned


@dg.asset(
    deps=[cluster_assignments, "document_index", centroids],
    automation_condition=eager_after("cluster_assignments"),
    group_name="clustering",
    kinds={"polars", "parquet"},
    code_version="3",
    check_specs=[
        dg.AssetCheckSpec(
            "every_document_assigned",
            asset="cluster_profiles",
            description="Every document of the index has a cluster (its shard's assignments "
            "are current).",
        )
    ],
    description="Per cluster: documents, tokens, mean quality, top c-TF-IDF terms and three "
    "snippets closest to the centroid.",
)
@one_line_failures
def cluster_profiles(
    context: dg.AssetExecutionContext, climb: ClimbSettings
) -> dg.MaterializeResult:
    from climb_assets.core.shared.plots import bar_chart, histogram

    settings, layout = climb.resolve()
    shards = registered(context.instance)
    require_shard_files(layout, shards, "cluster_profiles", *READ_PER_SHARD)
    layout = Layout(layout.root.resolve())  # a Ray worker's working directory is another
    profiles, documents, unassigned = _profile_shards(layout, settings, shards)
    write_parquet(profiles, layout.cluster_profiles)
    by_size = profiles.sort("n_docs", descending=True)
    return dg.MaterializeResult(
        metadata={
            "clusters": profiles.height,
            "empty_clusters": profiles.filter(pl.col("n_docs") == 0).height,
            "documents": documents - unassigned,
            **table_metadata(profiles, layout.cluster_profiles),
            "largest_clusters": table(
                by_size.select("cluster", "n_docs", "n_tokens", "mean_quality", "top_terms"), 20
            ),
            "cluster_sizes": plot(
                bar_chart(
                    [str(c) for c in by_size["cluster"]],
                    by_size["n_docs"].to_list(),
                    "documents per cluster",
                    "documents",
                ),
                "cluster sizes",
            ),
            "cluster_quality": plot(
                histogram(
                    profiles["mean_quality"].drop_nulls().to_numpy(), 20, "mean quality per cluster"
                ),
                "cluster quality",
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="every_document_assigned",
                passed=unassigned == 0,
                metadata={"unassigned_documents": unassigned, "documents": documents},
            )
        ],
    )


@dg.asset(
    deps=[cluster_profiles, centroids],
    automation_condition=eager_after("cluster_profiles"),
    group_name="clustering",
    kinds={"polars", "parquet"},
    code_version="2",
    check_specs=[
        dg.AssetCheckSpec(
            "no_empty_super_cluster",
            asset="super_clusters",
            description="At least one super-cluster, and each holds documents.",
        )
    ],
    description="Low-quality clusters pruned, close centroids merged: the super-clusters the "
    "mixture search weighs, and a map of every cluster to its super-cluster or 'pruned'.",
)
@one_line_failures
def super_clusters(context: dg.AssetExecutionContext, climb: ClimbSettings) -> dg.MaterializeResult:
    from climb_assets.core.clustering.super_clusters import prune_and_merge, super_cluster_summary
    from climb_assets.core.shared.plots import pca_2d, scatter_2d

    settings, layout = climb.resolve()
    conf = settings.clustering
    profiles = pl.read_parquet(layout.cluster_profiles)
    fitted = np.load(layout.centroids)
    mapping = prune_and_merge(
        profiles,
        fitted,
        conf.min_mean_quality,
        conf.min_cluster_docs,
        conf.merge_distance,
        conf.target_super_clusters,
        conf.linkage,
    )
    summary = super_cluster_summary(profiles, mapping)
    write_parquet(mapping, layout.super_cluster_map)
    write_parquet(summary, layout.super_clusters)
    labels = mapping.sort("cluster")["super_cluster"].to_list()  # None: pruned
    empty = summary.filter(pl.col("n_docs") == 0)["super_cluster"].to_list()
    names = super_cluster_names_of(summary)
    return dg.MaterializeResult(
        metadata={
            "super_clusters": summary.height,
            "clusters_kept": mapping.filter(pl.col("status") == "kept").height,
            "clusters_pruned": mapping.filter(pl.col("status") == "pruned").height,
            **table_metadata(summary, layout.super_clusters),
            "summary": table(summary_table(summary, names)),
            "examples": super_cluster_examples(summary, mapping, names),
            "pruned": table(pruned_table(mapping)),
            "centroid_map": plot(
                scatter_2d(
                    pca_2d(fitted),
                    labels,
                    "fine-cluster centroids (PCA), coloured by super-cluster",
                    none_label="pruned",
                    legend_title="super-cluster",
                ),
                "centroids by super-cluster",
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="no_empty_super_cluster",
                passed=not empty and summary.height > 0,
                metadata={"empty_super_clusters": dg.MetadataValue.json(empty)},
            )
        ],
    )


def summary_table(summary: pl.DataFrame, names: dict[int, str]) -> pl.DataFrame:
    """The super-clusters' numbers, narrow enough for the asset page (full top terms and
    examples are in the `examples` entry)."""
    return named(summary, names).select(
        "name",
        pl.col("n_clusters").alias("fine clusters"),
        pl.col("n_docs").alias("documents"),
        pl.col("n_tokens").alias("tokens"),
        pl.col("token_share").alias("token share"),
        pl.col("mean_quality").alias("mean quality"),
    )


def pruned_table(mapping: pl.DataFrame) -> pl.DataFrame:
    """The pruned fine clusters, named as 'cluster 5 (pruned)', and why."""
    pruned = mapping.filter(pl.col("status") == "pruned").sort("cluster")
    return pl.DataFrame(
        {
            "cluster": [fine_cluster_label(int(c), None) for c in pruned["cluster"]],
            "reason": pruned["reason"],
        },
        schema={"cluster": pl.Utf8, "reason": pl.Utf8},
    )
