"""Corpus stage: shard files -> documents (per shard) -> corpus-wide document index."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl

from climb_assets.core.shared.atomic import write_parquet
from climb_assets.defs.failures import one_line_failures
from climb_assets.defs.metadata import counts, parquet_schema, plot, table
from climb_assets.defs.partitions import CORPUS_SHARDS
from climb_assets.defs.resources import ClimbSettings
from climb_assets.defs.shard_state import (
    INPUT_FINGERPRINT,
    SHARD_CODE_VERSION,
    map_shards,
    registered,
    shard_input_fingerprint,
)
from climb_assets.settings import CorpusSettings, Settings
from climb_assets.store import Layout

if TYPE_CHECKING:
    from climb_assets.core.corpus.documents import ShardSummary

CORPUS_FILES = dg.AssetKey("corpus_shard_files")

corpus_shard_files = dg.AssetSpec(
    CORPUS_FILES,
    partitions_def=CORPUS_SHARDS,
    group_name="corpus",
    description="Raw shard files under the corpus folder (JSONL, gzip/zstd JSONL, Parquet). "
    "Registered as partitions by the corpus_shard_sensor.",
    kinds={"file"},
)


def token_counter_for(settings_model: str):  # noqa: ANN201 - returns the core's callable
    """Counts tokens with the encoder's own tokenizer, so 'tokens' means one thing corpus-wide."""
    from climb_assets.core.clustering.encoder import model_location
    from climb_assets.core.corpus.documents import wordpiece_token_counter

    return wordpiece_token_counter(Path(model_location(settings_model)))


@dataclass(frozen=True)
class ShardIngest:
    """One shard's ingest, with absolute paths: a Ray worker's working directory is another."""

    path: Path  # the shard file
    shard: str
    corpus: CorpusSettings
    model: str  # embedding.model, whose tokenizer counts the tokens
    documents: Path
    rejects: Path


def ingest_shard(job: ShardIngest) -> "ShardSummary":
    """Stream the shard to its documents and rejects files. The token counter is built here,
    in the process that counts, so a Ray task never pickles a tokenizer."""
    from climb_assets.core.corpus.documents import process_shard

    count_tokens = token_counter_for(job.model)
    return process_shard(job.path, job.shard, job.corpus, count_tokens, job.documents, job.rejects)


def ingest_shard_on_ray(job: ShardIngest) -> tuple["ShardSummary", dict[str, Any]]:
    """`ingest_shard` as a Ray task, and where it ran; a shard file the node cannot see fails
    naming the file and the node."""
    from climb_assets.core.corpus.shard_readers import require_visible
    from climb_assets.core.shared.execution import worker_identity

    where = worker_identity()
    require_visible(job.path, f"Ray node {where['node']} (host {where['host']})")
    return ingest_shard(job), where


def _ingest(settings: Settings, layout: Layout, shard: str) -> tuple["ShardSummary", dict]:
    """The shard ingested on the configured backend, and metadata on where."""
    on_ray = settings.execution.backend == "ray"
    path = settings.corpus.path / shard
    if on_ray:  # absolute paths: a Ray worker's working directory is another
        path, layout = path.absolute(), Layout(layout.root.resolve())
    job = ShardIngest(
        path,
        shard,
        settings.corpus,
        settings.embedding.model,
        layout.documents(shard),
        layout.rejects(shard),
    )
    if not on_ray:
        return ingest_shard(job), {"execution_backend": "local"}
    [(summary, where)] = map_shards(
        ingest_shard_on_ray, [job], settings, layout, "corpus_documents"
    )
    return summary, {
        "execution_backend": "ray",
        "nodes": dg.MetadataValue.json([where["node"]]),  # Ray node ids, as shard_embeddings
    }


@dg.asset(
    partitions_def=CORPUS_SHARDS,
    deps=[CORPUS_FILES],
    group_name="corpus",
    kinds={"polars", "parquet"},
    code_version=SHARD_CODE_VERSION,
    description="Unicode-normalized documents of one shard with quality signals and a combined "
    "quality score; exact duplicates and reused ids within the shard and unusable records go "
    "to rejects.",
)
@one_line_failures
def corpus_documents(
    context: dg.AssetExecutionContext, climb: ClimbSettings
) -> dg.MaterializeResult:
    from climb_assets.core.corpus.documents import shard_warning

    settings, layout = climb.resolve()
    shard = context.partition_key
    fingerprint = shard_input_fingerprint(settings, shard)  # before reading: what was read
    documents_path = layout.documents(shard)
    # streams both files to disk: the summary carries what the metadata needs, not the text
    summary, where = _ingest(settings, layout, shard)
    rejected = summary.rejects_by_reason
    context.log.info(f"{shard}: {summary.documents} documents kept, rejects {rejected}")
    metadata: dict[str, object] = {}
    if warning := shard_warning(summary):
        context.log.warning(f"{shard}: {warning}")
        metadata["warning"] = warning
    metadata |= {
        INPUT_FINGERPRINT: fingerprint,
        "rows_read": summary.rows_read,
        "documents": summary.documents,
        "rejected": summary.rejected,
        "rejects_by_reason": counts(rejected),
        "tokens": summary.tokens,
        "mean_quality": round(summary.mean_quality, 4),
        **where,
        "path": dg.MetadataValue.path(str(documents_path)),
        "preview": table(summary.preview, 5),
        "dagster/row_count": summary.documents,
        "dagster/column_schema": parquet_schema(documents_path),
    }
    if summary.documents:
        from climb_assets.core.shared.plots import histogram

        metadata["quality_distribution"] = plot(
            histogram(summary.quality_scores, 20, f"quality score, {shard}"),
            "quality histogram",
        )
    # The fingerprint is also the data version, so the UI tells which inputs a partition saw.
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(fingerprint))


@dg.asset(
    deps=[corpus_documents],
    automation_condition=dg.AutomationCondition.eager(),
    group_name="corpus",
    kinds={"polars", "parquet"},
    code_version="2",
    description="Corpus-wide index of kept documents, each text and each id once: a text or an "
    "id repeated across shards is kept in the shard that sorts first (then lowest row); the "
    "others are rejects (duplicate, duplicate_id) with their raw records.",
)
@one_line_failures
def document_index(context: dg.AssetExecutionContext, climb: ClimbSettings) -> dg.MaterializeResult:
    from climb_assets.core.corpus.document_index import build_document_index, with_raw_records
    from climb_assets.core.corpus.shards import skipped_files_message

    settings, layout = climb.resolve()
    shards = registered(context.instance)
    for stale in layout.unregistered_shard_files(shards):
        shard = layout.shard_of(stale)
        context.log.info(f"removing {stale}: shard {shard} is no longer in the corpus")
        stale.unlink()
    rejects = build_document_index(
        shards, layout.documents, layout.document_index, settings.execution.sql_memory_mb
    )
    rejects = with_raw_records(rejects, settings.corpus, lambda s: settings.corpus.path / s)
    write_parquet(rejects, layout.cross_shard_duplicates)
    by_reason = dict(rejects.group_by("reason").len().iter_rows())
    skipped = skipped_files_message(settings.corpus.path, settings.corpus.patterns)
    if skipped:
        context.log.warning(skipped)
    if by_reason.get("duplicate_id"):
        context.log.warning(
            f"{by_reason['duplicate_id']} document(s) reuse an id of another shard with a "
            f"different text; kept aside in {layout.cross_shard_duplicates}"
        )
    per_shard = (
        pl.scan_parquet(layout.document_index)
        .group_by("shard")
        .agg(pl.len().alias("documents"), pl.col("n_tokens").sum().alias("tokens"))
        .sort("shard")
        .collect()
    )
    documents = int(per_shard["documents"].sum())
    return dg.MaterializeResult(
        metadata={
            "shards": len(shards),
            "documents": documents,
            "tokens": int(per_shard["tokens"].sum()),
            "cross_shard_duplicates": by_reason.get("duplicate", 0),
            "cross_shard_duplicate_ids": by_reason.get("duplicate_id", 0),
            "rejects_path": dg.MetadataValue.path(str(layout.cross_shard_duplicates)),
            "by_shard": table(per_shard),
            "dagster/row_count": documents,
            "dagster/column_schema": parquet_schema(layout.document_index),
            **({"skipped_files": skipped} if skipped else {}),
        }
    )
