"""Corpus stage: shard files -> documents (per shard) -> corpus-wide document index."""

from pathlib import Path

import dagster as dg
import polars as pl

from climb_assets.assets.metadata import counts, markdown_table, plot
from climb_assets.core.atomic import write_parquet
from climb_assets.partitions import CORPUS_SHARDS
from climb_assets.resources import ClimbSettings
from climb_assets.settings import Settings

SHARD_CODE_VERSION = "1"  # code_version of the per-shard assets

CORPUS_FILES = dg.AssetKey("corpus_shard_files")

corpus_shard_files = dg.AssetSpec(
    CORPUS_FILES,
    partitions_def=CORPUS_SHARDS,
    group_name="corpus",
    description="Raw shard files under the corpus folder (JSONL, gzip/zstd JSONL, Parquet). "
    "Registered as partitions by the `corpus_shard_sensor`.",
    kinds={"file"},
)


INPUT_FINGERPRINT = "input_fingerprint"


def shard_input_fingerprint(settings: Settings, shard: str) -> str:
    """What a shard's documents and embeddings depend on: the file (size, mtime), the corpus and
    embedding settings, and the code version. `climb run` skips a shard whose fingerprint is
    unchanged since its last materialization."""
    import hashlib

    stat = (settings.corpus.path / shard).stat()
    parts = [
        f"{stat.st_size}:{stat.st_mtime_ns}",
        settings.corpus.model_dump_json(),
        settings.embedding.model_dump_json(),
        SHARD_CODE_VERSION,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def token_counter_for(settings_model: str):  # noqa: ANN201 - returns the core's callable
    """Counts tokens with the encoder's own tokenizer, so 'tokens' means one thing corpus-wide."""
    from climb_assets.core.documents import wordpiece_token_counter
    from climb_assets.core.embedding import model_location

    return wordpiece_token_counter(Path(model_location(settings_model)))


@dg.asset(
    partitions_def=CORPUS_SHARDS,
    deps=[CORPUS_FILES],
    group_name="corpus",
    kinds={"polars", "parquet"},
    code_version=SHARD_CODE_VERSION,
    description="Unicode-normalized documents of one shard with quality signals and a combined "
    "quality score; exact duplicates within the shard and unusable records go to rejects.",
)
def corpus_documents(
    context: dg.AssetExecutionContext, climb: ClimbSettings
) -> dg.MaterializeResult:
    from climb_assets.core.documents import process_shard, reject_counts

    settings, layout = climb.get(), climb.layout()
    shard = context.partition_key
    path = settings.corpus.path / shard
    fingerprint = shard_input_fingerprint(settings, shard)  # before reading: what was read
    result = process_shard(
        path, shard, settings.corpus, token_counter_for(settings.embedding.model)
    )
    docs = result.documents
    write_parquet(result.rejects, layout.rejects(shard))
    write_parquet(docs, layout.documents(shard))
    rejected = reject_counts(result.rejects)
    context.log.info(f"{shard}: {docs.height} documents kept, rejects {rejected}")
    metadata = {
        INPUT_FINGERPRINT: fingerprint,
        "rows_read": result.rows_read,
        "documents": docs.height,
        "rejected": sum(rejected.values()),
        "rejects_by_reason": counts(rejected),
        "tokens": int(docs["n_tokens"].sum()) if docs.height else 0,
        "mean_quality": float(docs["quality_score"].mean()) if docs.height else 0.0,
        "path": dg.MetadataValue.path(str(layout.documents(shard))),
        "preview": markdown_table(
            docs.select("doc_id", "row", "n_tokens", "quality_score", "text"), 5
        ),
    }
    if docs.height:
        from climb_assets.core.plots import histogram

        metadata["quality_distribution"] = plot(
            histogram(docs["quality_score"].to_numpy(), 20, f"quality score, {shard}"),
            "quality histogram",
        )
    return dg.MaterializeResult(metadata=metadata)


def registered_shards(context: dg.AssetExecutionContext) -> list[str]:
    """Shards currently registered; a shard whose file was removed is no longer one."""
    return sorted(context.instance.get_dynamic_partitions(CORPUS_SHARDS.name))


def build_document_index(shards: list[str], documents_path) -> tuple[pl.DataFrame, pl.DataFrame]:  # noqa: ANN001
    """Every kept document of all shards; a text seen in several shards is kept once, in the
    shard that sorts first (then lowest row), so the result does not depend on run order."""
    missing = [s for s in shards if not documents_path(s).exists()]
    if missing:
        raise FileNotFoundError(
            f"documents missing for shards {missing}: materialize corpus_documents for them first"
        )
    columns = ["doc_id", "shard", "row", "content_hash", "n_tokens", "quality_score"]
    frames = [pl.scan_parquet(documents_path(s)).select(columns) for s in shards]
    if not frames:
        raise ValueError("no corpus shards are registered; add shard files to the corpus folder")
    every = pl.concat(frames).collect().sort("shard", "row")
    first = every.with_columns(pl.int_range(pl.len()).over("content_hash").alias("_occurrence"))
    kept = first.filter(pl.col("_occurrence") == 0).drop("_occurrence")
    owner = kept.select(
        "content_hash", pl.col("shard").alias("kept_shard"), pl.col("row").alias("kept_row")
    )
    duplicates = (
        first.filter(pl.col("_occurrence") > 0)
        .drop("_occurrence")
        .join(owner, on="content_hash")
        .with_columns(pl.lit("duplicate").alias("reason"))
    )
    return kept, duplicates


@dg.asset(
    deps=[corpus_documents],
    automation_condition=dg.AutomationCondition.eager(),
    group_name="corpus",
    kinds={"polars", "parquet"},
    code_version="1",
    description="Corpus-wide index of kept documents: exact duplicates across shards resolved "
    "(first shard in sort order wins; the others are recorded as rejects).",
)
def document_index(context: dg.AssetExecutionContext, climb: ClimbSettings) -> dg.MaterializeResult:
    layout = climb.layout()
    shards = registered_shards(context)
    for stale in layout.unregistered_shard_files(shards):
        context.log.info(f"removing {stale}: its shard is no longer in the corpus")
        stale.unlink()
    kept, duplicates = build_document_index(shards, layout.documents)
    write_parquet(duplicates, layout.cross_shard_duplicates)
    write_parquet(kept, layout.document_index)
    per_shard = (
        kept.group_by("shard")
        .agg(pl.len().alias("documents"), pl.col("n_tokens").sum().alias("tokens"))
        .sort("shard")
    )
    return dg.MaterializeResult(
        metadata={
            "shards": len(shards),
            "documents": kept.height,
            "tokens": int(kept["n_tokens"].sum()),
            "cross_shard_duplicates": duplicates.height,
            "by_shard": markdown_table(per_shard),
        }
    )
