"""Which shards are registered and which need processing, decided from the Dagster instance.

`climb run` and the corpus sensor (and so the daemon behind `dagster dev`) ask the same questions
of the same records: the registered `corpus_shards` partitions, and the `input_fingerprint` each
per-shard materialization recorded (the file's bytes, the corpus and embedding settings and the
code version). A shard processed by either is not processed again until one of these changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import dagster as dg

from climb_assets.partitions import CORPUS_SHARDS
from climb_assets.settings import Settings
from climb_assets.store import Layout

# The per-shard assets: one ingestion run materializes both for one shard.
SHARD_ASSETS = ("corpus_documents", "shard_embeddings")

SHARD_CODE_VERSION = "2"  # code_version of the per-shard assets
INPUT_FINGERPRINT = "input_fingerprint"  # the metadata key each per-shard materialization records


def shard_input_fingerprint(settings: Settings, shard: str, content: str | None = None) -> str:
    """What a shard's documents and embeddings depend on: the file's bytes (hashed, so an edit
    that keeps size and mtime counts; `content` when already hashed), the corpus and embedding
    settings, and the code version. `climb run` and the corpus sensor skip a shard whose
    fingerprint is unchanged since its last materialization."""
    from climb_assets.core.shards import content_fingerprint

    parts = [
        content or content_fingerprint(settings.corpus.path / shard),
        settings.corpus.model_dump_json(),
        settings.embedding.model_dump_json(),
        SHARD_CODE_VERSION,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def shard_outputs(layout: Layout) -> dict[str, Callable[[str], object]]:
    """Per-shard asset -> the file it writes for a shard."""
    return {"corpus_documents": layout.documents, "shard_embeddings": layout.embeddings}


def partition_changes(files: list[str], registered: list[str]) -> tuple[list[str], list[str]]:
    """(to add, to remove) so the registered partitions match the shard files."""
    return sorted(set(files) - set(registered)), sorted(set(registered) - set(files))


def registered(instance: dg.DagsterInstance) -> list[str]:
    """Shards currently registered; a shard whose file was removed is no longer one."""
    return sorted(instance.get_dynamic_partitions(CORPUS_SHARDS.name))


def register_shards(instance: dg.DagsterInstance, files: list[str]) -> None:
    """Make the registered partitions match `files` (what `climb run` does before it runs)."""
    to_add, to_remove = partition_changes(files, registered(instance))
    if to_add:
        instance.add_dynamic_partitions(CORPUS_SHARDS.name, to_add)
    for gone in to_remove:
        instance.delete_dynamic_partition(CORPUS_SHARDS.name, gone)


def recorded_fingerprint(instance: dg.DagsterInstance, asset: str, shard: str) -> str | None:
    """The input fingerprint of the latest materialization of `asset` for `shard`, if any."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey(asset), asset_partitions=[shard]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    found = records[0].asset_materialization.metadata.get(INPUT_FINGERPRINT)
    return None if found is None else str(found.value)


def shard_is_current(
    instance: dg.DagsterInstance,
    settings: Settings,
    shard: str,
    expected: str,
    assets: tuple[str, ...] = SHARD_ASSETS,
) -> bool:
    """True when each of `assets` was last materialized for `shard` from inputs with fingerprint
    `expected` and its output file still exists."""
    outputs = shard_outputs(Layout(settings.output_dir))
    for asset in assets:
        if asset not in outputs or not outputs[asset](shard).exists():  # type: ignore[attr-defined]
            return False
        if recorded_fingerprint(instance, asset, shard) != expected:
            return False
    return True


def require_shard_files(layout: Layout, shards: list[str], reader: str, *assets: str) -> None:
    """Fail with a message naming what to materialize first when a registered shard lacks a file
    `reader` reads (registered but not processed yet), rather than a raw FileNotFoundError."""
    from climb_assets.core.shards import missing_shard_files_message

    files = {**shard_outputs(layout), "cluster_assignments": layout.assignments}
    missing = {
        asset: [s for s in shards if not files[asset](s).exists()]  # type: ignore[attr-defined]
        for asset in assets
    }
    if message := missing_shard_files_message(reader, missing):
        raise dg.Failure(description=message)
