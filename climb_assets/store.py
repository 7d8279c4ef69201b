"""The artifact store: where each artifact lives under `settings.output_dir`, under which file
names, and how the files are read back. One place, so assets, the CLI, the report and the DuckDB
catalog agree on paths. Imports no Dagster: core (proxy jobs on Ray workers) uses it too."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

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
    root: Path

    # per shard
    def documents(self, shard: str) -> Path:
        return self.root / "documents" / f"{shard_file_stem(shard)}.parquet"

    def rejects(self, shard: str) -> Path:
        return self.root / "rejects" / f"{shard_file_stem(shard)}.parquet"

    def embeddings(self, shard: str) -> Path:
        return self.root / "embeddings" / f"{shard_file_stem(shard)}.npy"

    def assignments(self, shard: str) -> Path:
        return self.root / "assignments" / f"{shard_file_stem(shard)}.parquet"

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
        folders = [
            self.root / name for name in ("documents", "rejects", "embeddings", "assignments")
        ]
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
        return self.root / "rejects" / "_cross_shard_duplicates.parquet"

    @property
    def centroids(self) -> Path:
        return self.root / "clusters" / "centroids.npy"

    @property
    def cluster_profiles(self) -> Path:
        return self.root / "clusters" / "profiles.parquet"

    @property
    def super_cluster_map(self) -> Path:
        return self.root / "clusters" / "super_cluster_map.parquet"

    @property
    def super_clusters(self) -> Path:
        return self.root / "clusters" / "super_clusters.parquet"

    @property
    def proxy_pool(self) -> Path:
        return self.root / "proxy_pool"

    def iteration(self, key: str) -> Path:
        return self.root / "bootstrap" / key

    def iteration_work(self, key: str) -> Path:
        """Finished proxies of an iteration still running: a rerun after a crash resumes."""
        return self.root / "bootstrap" / f".{key}.work"

    @property
    def optimal_mixture(self) -> Path:
        return self.root / "optimal_mixture.json"

    @property
    def evaluation(self) -> Path:
        """The mixture evaluation: runs.parquet (mixture x seed) and summary.json."""
        return self.root / "evaluation"

    @property
    def evaluation_work(self) -> Path:
        """Finished evaluation models, kept so a rerun or more seeds reuse them."""
        return self.root / ".evaluation.work"

    @property
    def dataset(self) -> Path:
        return self.root / "climbmix"

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
