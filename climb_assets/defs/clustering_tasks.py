"""The clustering stage's per-shard tasks: one shard's documents assigned to their nearest
centroids, and one shard's kept documents folded into partial cluster profiles.

`cluster_assignments` and `cluster_profiles` map these over the registered shards (in this
process, in worker processes or as Ray tasks, see `map_shards`), so they take and return only what
pickles: the layout, the settings and a shard key, and a summary row or a saved partial.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from climb_assets.core.shared.atomic import write_parquet
from climb_assets.settings import Settings
from climb_assets.store import Layout, kept_document_batches, load_embeddings, shard_file_stem

if TYPE_CHECKING:
    from climb_assets.core.clustering.clusters import ProfileAccumulator


def assign_shard(
    layout: Layout, shard: str, fitted: np.ndarray, settings: Settings
) -> pl.DataFrame:
    """Nearest centroid and Euclidean distance of every document of one shard."""
    from climb_assets.core.clustering.kmeans import assign

    vectors = load_embeddings(layout, [shard])[0]
    docs = pl.read_parquet(layout.documents(shard), columns=["doc_id", "row"])
    if docs.height != vectors.shape[0]:
        raise ValueError(
            f"{shard}: {docs.height} documents but {vectors.shape[0]} embeddings; "
            "re-materialize shard_embeddings for this shard"
        )
    labels, distances = assign(
        vectors, fitted, settings.clustering.assign_chunk_size, settings.clustering.use_gpu
    )
    return docs.with_columns(
        pl.lit(shard).alias("shard"),
        pl.Series("cluster", labels, dtype=pl.Int32),
        pl.Series("distance", distances, dtype=pl.Float32),
    ).select("shard", "row", "doc_id", "cluster", "distance")


def assign_and_write(layout: Layout, settings: Settings, shard: str) -> dict:
    """One shard's task: its assignments written, and its row of the step's summary."""
    assigned = assign_shard(layout, shard, np.load(layout.centroids), settings)
    write_parquet(assigned, layout.assignments(shard))
    return {
        "shard": shard,
        "documents": assigned.height,
        "clusters_used": assigned["cluster"].n_unique(),
        "mean_distance": float(assigned["distance"].mean()) if assigned.height else None,
    }


@dataclass(frozen=True)
class ShardProfile:
    """One shard's share of the cluster profiles (a `ProfilePartial` saved under `folder`), and
    of the documents counted."""

    folder: Path
    documents: int  # kept by the index
    unassigned: int  # of those, without a cluster (stale assignments)


def profile_accumulator(
    settings: Settings, k: int, term_fractions: dict[int, float]
) -> "ProfileAccumulator":
    from climb_assets.core.clustering.clusters import ProfileAccumulator

    return ProfileAccumulator(
        k, settings.clustering.top_terms, seed=settings.seed, term_fractions=term_fractions
    )


def term_fractions(layout: Layout, shards: list[str], settings: Settings) -> dict[int, float]:
    """Per cluster, the share of its documents whose words are counted (from the assignments'
    cluster sizes, no text read)."""
    from climb_assets.core.clustering.clusters import term_sample_fractions

    sizes = (
        pl.scan_parquet([layout.assignments(s) for s in shards]).group_by("cluster").len().collect()
    )
    counts = dict(zip(sizes["cluster"].to_list(), sizes["len"].to_list(), strict=True))
    return term_sample_fractions(counts, settings.clustering.term_sample_docs)


def profile_shard(
    layout: Layout, settings: Settings, k: int, term_fractions: dict[int, float], shard: str
) -> ShardProfile:
    """One shard's task: its kept documents folded into profiles, a batch at a time."""
    accumulator = profile_accumulator(settings, k, term_fractions)
    columns = ["doc_id", "text", "n_tokens", "quality_score"]
    documents = unassigned = 0
    batch_docs = settings.execution.batch_docs
    for batch in kept_document_batches(layout, [shard], columns, batch_docs):
        documents += batch.height
        unassigned += batch["cluster"].null_count()
        accumulator.add(batch.filter(pl.col("cluster").is_not_null()))
    folder = layout.profiles_work / shard_file_stem(shard)
    accumulator.partial().save(folder)
    return ShardProfile(folder, documents, unassigned)
