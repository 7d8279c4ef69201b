"""The artifact store: where each artifact lives under `settings.output_dir`, under which file
names, and how the files are read back. One place, so assets, the CLI, the report and the DuckDB
catalog agree on paths. Imports no Dagster: core (proxy jobs on Ray workers) uses it too."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from climb_assets.core.dataset.build import check_corpus_supply
from climb_assets.core.dataset.writer import SHARD_GLOB
from climb_assets.settings import Settings

# Per-shard folders: one file per registered shard, named by `shard_file_stem`.
DOCUMENTS, REJECTS, EMBEDDINGS, ASSIGNMENTS = "documents", "rejects", "embeddings", "assignments"
# The per-shard files `kept_document_batches` reads, in the order they are made.
READ_PER_SHARD = ("corpus_documents", "shard_embeddings", "cluster_assignments")

# Files of one bootstrap iteration (and, runs/curves/summary, of the evaluation).
RUNS_FILE = "runs.parquet"  # iteration: one row per proxy; evaluation: one per (mixture, seed)
CURVES_FILE = "loss_curves.parquet"
REPEATS_FILE = "seed_repeats.parquet"  # candidates re-run with a second seed: the noise floor
PREDICTOR_DIR = "predictor"
SUMMARY_FILE = "summary.json"
DATASET_SHARDS = SHARD_GLOB  # the final dataset's files, as core.dataset.writer writes them
DATASET_CARD = "README.md"
POOL_MANIFEST = "manifest.json"  # core.search.proxy_pool.MANIFEST; not imported, that loads torch

# '%' first of all, so the encoding stays injective; '/' flattens the path; glob characters
# would make polars or DuckDB read a file name as a pattern.
_ESCAPED = frozenset("%/*?[]")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def _escape(char: str) -> str:
    return f"%{ord(char):02X}"


def shard_file_stem(shard_key: str) -> str:
    """A shard key as a flat file name, injective and reversible (`shard_key_of`):
    'web/part-1.jsonl.gz' -> 'web%2Fpart-1.jsonl.gz', 'web__part-1.jsonl.gz' unchanged. A
    leading '.' or '_' is escaped too: `unregistered_shard_files` skips such names."""
    stem = "".join(_escape(c) if c in _ESCAPED else c for c in shard_key)
    return _escape(stem[0]) + stem[1:] if stem[:1] in (".", "_") else stem


def shard_key_of(file_stem: str) -> str:
    """The shard key a `shard_file_stem` came from."""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), file_stem)


@dataclass(frozen=True)
class Layout:
    """Every artifact's path under `root` (the settings' output_dir); the readers below take one."""

    root: Path

    # per shard
    def documents(self, shard: str) -> Path:
        return self.root / DOCUMENTS / f"{shard_file_stem(shard)}.parquet"

    def rejects(self, shard: str) -> Path:
        return self.root / REJECTS / f"{shard_file_stem(shard)}.parquet"

    def embeddings(self, shard: str) -> Path:
        return self.root / EMBEDDINGS / f"{shard_file_stem(shard)}.npy"

    def assignments(self, shard: str) -> Path:
        return self.root / ASSIGNMENTS / f"{shard_file_stem(shard)}.parquet"

    @staticmethod
    def shard_of(path: Path) -> str:
        """The shard key of a per-shard file (documents, rejects, embeddings, assignments)."""
        return shard_key_of(path.name.removesuffix(".parquet").removesuffix(".npy"))

    def unregistered_shard_files(self, shards: list[str]) -> list[Path]:
        """Per-shard files left by shards that were removed from the corpus."""
        expected = {
            path
            for shard in shards
            for path in (
                self.documents(shard), self.rejects(shard),
                self.embeddings(shard), self.assignments(shard),
            )
        }  # fmt: skip
        folders = [self.root / name for name in (DOCUMENTS, REJECTS, EMBEDDINGS, ASSIGNMENTS)]
        return sorted(
            path
            for folder in folders
            if folder.is_dir()
            for path in folder.iterdir()
            if path.is_file() and not path.name.startswith((".", "_")) and path not in expected
        )

    # corpus-wide
    @property
    def document_index(self) -> Path:
        return self.root / "document_index.parquet"

    @property
    def cross_shard_duplicates(self) -> Path:
        return self.root / REJECTS / "_cross_shard_duplicates.parquet"

    @property
    def centroids(self) -> Path:
        return self.root / "clusters" / "centroids.npy"

    @property
    def cluster_profiles(self) -> Path:
        return self.root / "clusters" / "profiles.parquet"

    @property
    def profiles_work(self) -> Path:
        """Each shard's partial cluster profile, written by its task and merged by the step."""
        return self.root / "clusters" / ".profiles.work"

    @property
    def super_cluster_map(self) -> Path:
        return self.root / "clusters" / "super_cluster_map.parquet"

    @property
    def super_clusters(self) -> Path:
        return self.root / "clusters" / "super_clusters.parquet"

    @property
    def proxy_pool(self) -> Path:
        return self.root / "proxy_pool"

    @property
    def proxy_pool_manifest(self) -> Path:
        """The pool's manifest (vocabulary, groups and their token counts): its text identifies
        the pool in proxy and evaluation checkpoint keys."""
        return self.proxy_pool / POOL_MANIFEST

    def iteration(self, key: str) -> Path:
        return self.root / "bootstrap" / key

    def iteration_work(self, key: str) -> Path:
        """Finished proxies of an iteration still running: a rerun after a crash resumes."""
        return self.root / "bootstrap" / f".{key}.work"

    def runs(self, key: str) -> Path:
        return self.iteration(key) / RUNS_FILE

    def loss_curves(self, key: str) -> Path:
        return self.iteration(key) / CURVES_FILE

    def seed_repeats(self, key: str) -> Path:
        return self.iteration(key) / REPEATS_FILE

    def predictor(self, key: str) -> Path:
        return self.iteration(key) / PREDICTOR_DIR

    def iteration_summary(self, key: str) -> Path:
        return self.iteration(key) / SUMMARY_FILE

    @property
    def optimal_mixture(self) -> Path:
        return self.root / "optimal_mixture.json"

    @property
    def final_race_work(self) -> Path:
        """Finished proxies of the final race still running: a rerun after a crash resumes."""
        return self.root / "bootstrap" / ".final_race.work"

    @property
    def evaluation(self) -> Path:
        """The mixture evaluation: runs.parquet (mixture x seed) and summary.json."""
        return self.root / "evaluation"

    @property
    def evaluation_summary(self) -> Path:
        return self.evaluation / SUMMARY_FILE

    @property
    def evaluation_work(self) -> Path:
        """Finished evaluation models, kept so a rerun or more seeds reuse them."""
        return self.root / ".evaluation.work"

    @property
    def dataset(self) -> Path:
        return self.root / "climbmix"

    @property
    def dataset_work(self) -> Path:
        """The kept documents' metadata split by super-cluster while the dataset is sampled."""
        return self.root / ".dataset.work"

    @property
    def dataset_card(self) -> Path:
        return self.dataset / DATASET_CARD

    def dataset_shards(self) -> list[Path]:
        """The final dataset's files, in order (empty before the dataset is written)."""
        return sorted(self.dataset.glob(DATASET_SHARDS))

    @property
    def report(self) -> Path:
        """The latest search as one self-contained HTML page (`climb report`)."""
        return self.root / "report.html"

    @property
    def catalog(self) -> Path:
        return self.root / "climb.duckdb"

    @property
    def run_lock(self) -> Path:
        """Held (flock) by the `climb run` or `climb evaluate` writing this folder."""
        return self.root / ".climb-run.lock"


def table_globs() -> dict[str, str]:
    """Table name -> glob relative to the output folder, for every table the pipeline writes
    (the DuckDB catalog's views), built from the paths above so the two cannot drift."""
    here = Layout(Path())
    return {
        "documents": f"{DOCUMENTS}/*.parquet",
        "rejects": f"{REJECTS}/*.parquet",
        "document_index": here.document_index.as_posix(),
        "assignments": f"{ASSIGNMENTS}/*.parquet",
        "cluster_profiles": here.cluster_profiles.as_posix(),
        "super_cluster_map": here.super_cluster_map.as_posix(),
        "super_clusters": here.super_clusters.as_posix(),
        "proxy_runs": here.runs("*").as_posix(),
        "loss_curves": here.loss_curves("*").as_posix(),
        "climbmix": (here.dataset / DATASET_SHARDS).as_posix(),
    }


# Readers: artifacts read back for the next stage, the CLI and the report.


def load_embeddings(layout: Layout, shards: list[str]) -> list[np.ndarray]:
    """Memory-mapped embeddings of each shard (nothing is read until rows are indexed)."""
    return [np.load(layout.embeddings(s), mmap_mode="r") for s in shards]


def kept_document_batches(
    layout: Layout,
    shards: list[str],
    columns: list[str],
    batch_docs: int,
    *,
    kept_super_clusters: bool = False,
) -> Iterator[pl.DataFrame]:
    """Every document of the index with its cluster and distance (and, with
    `kept_super_clusters`, its super-cluster, documents of pruned clusters left out), in
    (shard, row) order, at most `batch_docs` documents read at a time: corpus-wide stages stream
    the corpus through this, so their memory follows `batch_docs`, never the corpus.

    `columns` are read from the shards' documents files (shard and row always come along). A
    shard's rows of the index and its assignments (a few numbers per document, no text) are
    read whole; its documents, text included, one batch at a time.
    """
    if batch_docs < 1:
        raise ValueError(f"batch_docs must be >= 1, got {batch_docs}")
    wanted = ["row", *(c for c in columns if c not in ("shard", "row"))]
    mapping = (
        pl.read_parquet(layout.super_cluster_map, columns=["cluster", "super_cluster"]).filter(
            pl.col("super_cluster").is_not_null()
        )
        if kept_super_clusters
        else None
    )
    for shard in sorted(shards):
        kept = (
            pl.scan_parquet(layout.document_index)
            .filter(pl.col("shard") == shard)
            .select("row")
            .collect()
        )
        assigned = pl.read_parquet(layout.assignments(shard)).select("row", "cluster", "distance")
        if mapping is not None:
            assigned = assigned.join(mapping, on="cluster", how="inner", maintain_order="left")
        source = pq.ParquetFile(layout.documents(shard))
        for batch in source.iter_batches(batch_size=batch_docs, columns=wanted):
            docs = pl.from_arrow(batch)
            assert isinstance(docs, pl.DataFrame)
            docs = docs.join(kept, on="row", how="semi", maintain_order="left")
            how = "inner" if mapping is not None else "left"
            joined = docs.join(assigned, on="row", how=how, maintain_order="left")
            if joined.height:
                yield joined.with_columns(pl.lit(shard).alias("shard"))


def corpus_token_counts(layout: Layout, settings: Settings) -> dict[int, int]:
    """Tokens of each super-cluster, counted by the corpus tokenizer like the dataset budget, so
    that the caps protect the final dataset exactly (proxies see about as many BPE tokens).

    Raises when they cannot fill dataset.token_budget, naming the dataset settings, before the
    caps computed from that budget fail on the same shortfall (see `constraint_budget`)."""
    supers = pl.read_parquet(layout.super_clusters, columns=["super_cluster", "n_tokens"])
    counts = dict(zip(supers["super_cluster"].to_list(), supers["n_tokens"].to_list(), strict=True))
    dataset = settings.dataset
    check_corpus_supply(sum(counts.values()), dataset.token_budget, dataset.repetition_factor)
    return counts


class MissingArtifact(FileNotFoundError):
    """An artifact a step needs is not there; the message names what to materialize. (The
    Dagster room turns it into a one-line Failure: the store imports no Dagster.)"""


def iteration_key(iteration: int) -> str:
    """1-based iteration number -> its folder and partition key, e.g. 2 -> 'iter-002'."""
    return f"iter-{iteration:03d}"


def iteration_number(key: str) -> int:
    """Partition key -> 1-based iteration number, e.g. 'iter-002' -> 2."""
    if not key.startswith("iter-") or not key[5:].isdigit():
        raise ValueError(f"{key!r} is not an iteration key like 'iter-001'")
    return int(key[5:])


def iteration_runs(layout: Layout, before: int) -> pl.DataFrame | None:
    """Proxy runs of iterations 1..before-1, or None for the first iteration."""
    frames = []
    for i in range(1, before):
        path = layout.runs(iteration_key(i))
        if not path.exists():
            raise MissingArtifact(
                f"{iteration_key(before)} needs every earlier iteration; {iteration_key(i)} is "
                f"not materialized. Materialize bootstrap_iteration {iteration_key(i)} first "
                "(or backfill all iterations in order)."
            )
        frames.append(pl.read_parquet(path))
    # diagonal: files written before the column order was fixed may list columns differently
    return pl.concat(frames, how="diagonal") if frames else None


def read_runs(layout: Layout, key: str) -> pl.DataFrame:
    """One iteration's proxy runs; MissingArtifact naming what to run when missing."""
    path = layout.runs(key)
    if not path.exists():
        raise MissingArtifact(f"{path} is missing: materialize bootstrap_iteration {key} first")
    return pl.read_parquet(path)


def read_summary(layout: Layout, key: str) -> dict:
    return json.loads(layout.iteration_summary(key).read_text())


def seed_repeats(layout: Layout, iterations: int) -> pl.DataFrame | None:
    """Every iteration's candidates re-run with a second seed (None when no iteration has any)."""
    tables = [
        pl.read_parquet(path)
        for i in range(1, iterations + 1)
        if (path := layout.seed_repeats(iteration_key(i))).exists()
    ]
    return pl.concat(tables) if tables else None
