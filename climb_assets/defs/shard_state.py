"""Which shards are registered and which need processing, decided from the Dagster instance.

`climb run` and the corpus sensor (and so the daemon behind `dg dev`) ask the same questions
of the same records: the registered `corpus_shards` partitions, and the `input_fingerprint` each
per-shard materialization recorded (the file's bytes, the corpus and embedding settings and the
code version). A shard processed by either is not processed again until one of these changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import dagster as dg

from climb_assets.core.corpus.shards import discover_shards
from climb_assets.defs.partitions import CORPUS_SHARDS
from climb_assets.settings import Settings
from climb_assets.store import Layout

Item = TypeVar("Item")
Result = TypeVar("Result")

SHARD_CODE_VERSION = "2"  # code_version of the per-shard assets
INPUT_FINGERPRINT = "input_fingerprint"  # the metadata key each per-shard materialization records


def shard_input_fingerprint(settings: Settings, shard: str, content: str | None = None) -> str:
    """What a shard's documents and embeddings depend on: the file's bytes (hashed, so an edit
    that keeps size and mtime counts; `content` when already hashed), the corpus and embedding
    settings, and the code version. `climb run` and the corpus sensor skip a shard whose
    fingerprint is unchanged since its last materialization."""
    from climb_assets.core.corpus.shards import content_fingerprint

    parts = [
        content or content_fingerprint(settings.corpus.path / shard),
        settings.corpus.model_dump_json(),
        settings.embedding.identity_json(),
        SHARD_CODE_VERSION,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def shard_outputs(layout: Layout) -> dict[str, Callable[[str], object]]:
    """Asset -> the file it writes for a shard: the per-shard assets, and cluster_assignments
    (one run for all shards, one file per shard)."""
    return {
        "corpus_documents": layout.documents,
        "shard_embeddings": layout.embeddings,
        "cluster_assignments": layout.assignments,
    }


def partition_changes(files: list[str], registered: list[str]) -> tuple[list[str], list[str]]:
    """(to add, to remove) so the registered partitions match the shard files."""
    return sorted(set(files) - set(registered)), sorted(set(registered) - set(files))


def registered(instance: dg.DagsterInstance) -> list[str]:
    """Shards currently registered; a shard whose file was removed is no longer one."""
    return sorted(instance.get_dynamic_partitions(CORPUS_SHARDS.name))


@dataclass(frozen=True)
class ShardRegistration:
    """The shard files under the corpus folder and the partition changes that make the
    registered `corpus_shards` match them. The sensor returns the changes as requests (the
    daemon applies them), `climb run` applies them itself: both find the same."""

    files: dict[str, str]  # shard key -> stat key (see core.corpus.shards.discover_shards)
    to_add: list[str]
    to_remove: list[str]

    def requests(self) -> list[dg.DynamicPartitionsRequest]:
        requests: list[dg.DynamicPartitionsRequest] = []
        if self.to_add:
            requests.append(CORPUS_SHARDS.build_add_request(self.to_add))
        if self.to_remove:
            requests.append(CORPUS_SHARDS.build_delete_request(self.to_remove))
        return requests

    def apply(self, instance: dg.DagsterInstance) -> None:
        if self.to_add:
            instance.add_dynamic_partitions(CORPUS_SHARDS.name, self.to_add)
        for gone in self.to_remove:
            instance.delete_dynamic_partition(CORPUS_SHARDS.name, gone)


def shard_registration(settings: Settings, instance: dg.DagsterInstance) -> ShardRegistration:
    """Discover the shard files and compare them with the registered partitions."""
    files = discover_shards(settings.corpus.path, settings.corpus.patterns)
    to_add, to_remove = partition_changes(list(files), registered(instance))
    return ShardRegistration(files, to_add, to_remove)


def register_shards(settings: Settings, instance: dg.DagsterInstance) -> list[str]:
    """Make the registered partitions match the shard files now (what `climb run` does before it
    runs); returns the shards. Fails when there are none: there would be nothing to run."""
    found = shard_registration(settings, instance)
    if not found.files:
        raise FileNotFoundError(
            f"no shard files matching {settings.corpus.patterns} under {settings.corpus.path}"
        )
    found.apply(instance)
    return sorted(found.files)


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
    assets: tuple[str, ...],
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
    from climb_assets.core.corpus.shards import missing_shard_files_message

    files = shard_outputs(layout)
    missing = {
        asset: [s for s in shards if not files[asset](s).exists()]  # type: ignore[attr-defined]
        for asset in assets
    }
    if message := missing_shard_files_message(reader, missing):
        raise dg.Failure(description=message)


def map_shards(
    fn: Callable[[Item], Result],
    items: Sequence[Item],
    settings: Settings,
    layout: Layout,
    step: str,
) -> list[Result]:
    """fn(item) for every item (one per shard), one task each on the configured backend
    (`map_shard_tasks`), results in item order; a task that failed or a cluster that cannot run
    them fails the step with the cause. `fn` and the items must pickle, with absolute paths:
    a Ray worker's working directory is not this process's."""
    from climb_assets.core.shared.execution import ExecutionError, TasksFailed, map_shard_tasks

    try:
        return map_shard_tasks(fn, items, settings.execution, layout.root)
    except (ExecutionError, TasksFailed) as err:
        raise dg.Failure(f"{step}: {err}") from err
