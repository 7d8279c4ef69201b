"""Cluster purity: do super-clusters keep the sample's domains apart, per linkage and threshold?

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/cluster_purity.py [--k 48]
        [--seed 1234] [--corpus data/corpus] [--thresholds 0.3,0.35,...] [--targets 7,10,15]
        [--no-prune]

The bundled sample's document ids start with their domain (news-000206, kjv-..., before the
first '-' or '_'). The corpus is read with the project's reader (`core.corpus.documents`),
embedded with the project's encoder (cached to benchmarks/results/cluster_purity-<key>.npz, the
key hashing texts and embedding settings, so reruns skip encoding), and clustered with the
project's faiss K-means fitted like the `centroids` asset (per-shard documents, seeded sample).
Documents are then deduplicated across shards as `document_index` does, and clusters pruned and
merged by `core.clustering.super_clusters.prune_and_merge` with the ClusteringSettings pruning
defaults (--no-prune: every cluster is kept).

Printed per linkage and merge_distance (rows only where the super-cluster count changes) and
per target count: super-clusters, purity (share of documents in their super-cluster's majority
domain), NMI (mutual information / mean of the two entropies) and the largest super-cluster's
share of documents; then the fine clusters, the ClusteringSettings default and a plain K-means
with one cluster per domain.

Rough figures (6309 documents, k=48, seed 1234; 82 s to encode on 1 CPU thread, then seconds):
fine clusters purity 0.929 (NMI 0.59); ward < 0.75: 10 super-clusters, purity 0.904, NMI 0.79,
largest 18%; complete < 0.55: 19, 0.923 but < 0.70: 11, 0.821; average < 0.57 (the former
default): 15, 0.923, yet 10 at 0.78 with K-means seeds 1 and 3; single < 0.55: 5, 0.19 (one
super-cluster holds 97%); plain K-means k=7: 0.878, NMI 0.77. Seeds 1-3: ward < 0.75 gives
8-10 super-clusters at purity 0.928-0.933 (fine clusters 0.930-0.933).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import polars as pl

from climb_assets.core.clustering.embedding import encode
from climb_assets.core.clustering.encoder import load_encoder, model_location
from climb_assets.core.clustering.kmeans import assign, fit_kmeans, sample_for_fit
from climb_assets.core.clustering.super_clusters import LINKAGES, Linkage, prune_and_merge
from climb_assets.core.corpus.documents import documents_frame, wordpiece_token_counter
from climb_assets.settings import ClusteringSettings, CorpusSettings, EmbeddingSettings

RESULTS = Path(__file__).parent / "results"
DOMAIN_PATTERN = r"^([^-_]+)"  # the id prefix before the first '-' or '_'
DEFAULT_THRESHOLDS = ",".join(f"{0.30 + 0.05 * i:.2f}" for i in range(35))  # 0.30 .. 2.00


def read_corpus(corpus: CorpusSettings) -> dict[str, pl.DataFrame]:
    """Documents of every shard (sorted by file name, as shard keys sort), via the reader."""
    counter = wordpiece_token_counter(Path(model_location(EmbeddingSettings().model)))
    paths = sorted(
        {p for pattern in corpus.patterns for p in corpus.path.glob(pattern) if p.is_file()}
    )
    shards: dict[str, pl.DataFrame] = {}
    for path in paths:
        key = str(path.relative_to(corpus.path))
        shards[key] = documents_frame(path, key, corpus, counter)
    return shards


def embeddings(
    shards: dict[str, pl.DataFrame], settings: EmbeddingSettings, threads: int
) -> dict[str, np.ndarray]:
    """Per-shard embeddings, from the cache when texts and encoder settings are unchanged."""
    digest = hashlib.sha256(settings.model_dump_json().encode())
    for key, docs in shards.items():
        digest.update(key.encode())
        for content in docs["content_hash"]:
            digest.update(content.encode())
    path = RESULTS / f"cluster_purity-{digest.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as cached:
            print(f"embeddings from {path}")
            return {key: cached[f"shard{i}"] for i, key in enumerate(shards)}
    import torch

    torch.set_num_threads(threads)
    model = load_encoder(settings)
    started = time.perf_counter()
    out = {
        key: encode(model, docs["text"].to_list(), settings.batch_size)
        for key, docs in shards.items()
    }
    print(
        f"encoded {sum(len(v) for v in out.values())} docs in {time.perf_counter() - started:.1f} s"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"shard{i}": out[key] for i, key in enumerate(shards)})
    return out


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def scores(labels: np.ndarray, truth: np.ndarray) -> tuple[int, float, float, float]:
    """(groups, purity, NMI with arithmetic-mean normalization, largest group's share)."""
    _, label_idx = np.unique(labels, return_inverse=True)
    _, truth_idx = np.unique(truth, return_inverse=True)
    table = np.zeros((label_idx.max() + 1, truth_idx.max() + 1))
    np.add.at(table, (label_idx, truth_idx), 1)
    n = table.sum()
    purity = table.max(axis=1).sum() / n
    joint = table / n
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    mutual = float((joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])).sum())
    h_labels, h_truth = _entropy(table.sum(axis=1)), _entropy(table.sum(axis=0))
    mean_h = (h_labels + h_truth) / 2
    nmi = mutual / mean_h if mean_h > 0 else 1.0
    return table.shape[0], float(purity), nmi, float(table.sum(axis=1).max() / n)


def profiles_of(docs: pl.DataFrame, k: int) -> pl.DataFrame:
    stats = docs.group_by("cluster").agg(
        n_docs=pl.len().cast(pl.Int64),
        n_tokens=pl.col("n_tokens").sum().cast(pl.Int64),
        mean_quality=pl.col("quality_score").cast(pl.Float64).mean(),
    )
    every = pl.DataFrame({"cluster": pl.Series(range(k), dtype=pl.Int32)})
    return every.join(stats, on="cluster", how="left").with_columns(
        pl.col("n_docs").fill_null(0), pl.col("n_tokens").fill_null(0)
    )


def line(name: str, cut: str, n: int, purity: float, nmi: float, largest: float, docs: int) -> str:
    return f"{name:9} {cut:>14} {n:5d} {purity:6.3f} {nmi:6.3f} {largest:7.3f} {docs:5d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--k", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--niter", type=int, default=ClusteringSettings().niter)
    parser.add_argument("--thresholds", default=DEFAULT_THRESHOLDS, help="comma-separated")
    parser.add_argument("--targets", default="7,10,15", help="comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads")
    parser.add_argument("--no-prune", action="store_true", help="keep every cluster")
    parser.add_argument(
        "--max-seq-length", type=int, default=EmbeddingSettings().max_seq_length, help="encoder"
    )
    args = parser.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    conf = ClusteringSettings()
    if args.no_prune:
        min_quality, min_docs = -np.inf, 0
    else:
        min_quality, min_docs = conf.min_mean_quality, conf.min_cluster_docs
    shards = read_corpus(CorpusSettings(path=args.corpus))
    vectors = embeddings(
        shards, EmbeddingSettings(device="cpu", max_seq_length=args.max_seq_length), args.threads
    )
    keys = list(shards)
    sample = sample_for_fit([vectors[s] for s in keys], conf.sample_size, args.seed, keys)
    centroids = fit_kmeans(sample, args.k, args.niter, args.seed, "never")
    k = centroids.shape[0]

    # as document_index: a text seen in several shards is kept once, first shard then row wins
    frames: list[pl.DataFrame] = []
    for key in keys:
        labels, _ = assign(vectors[key], centroids, 65_536, "never")
        frames.append(shards[key].with_columns(pl.Series("cluster", labels, dtype=pl.Int32)))
    docs = (
        pl.concat(frames)
        .sort("shard", "row")
        .unique("content_hash", keep="first", maintain_order=True)
        .with_columns(domain=pl.col("doc_id").str.extract(DOMAIN_PATTERN))
    )
    profiles = profiles_of(docs, k)
    domains = docs["domain"].value_counts().sort("domain")
    pruning = "off" if args.no_prune else f"min_mean_quality {min_quality}, min_docs {min_docs}"
    print(
        f"{docs.height} documents, {len(domains)} domains "
        f"({', '.join(f'{d} {n}' for d, n in domains.iter_rows())}), k={k}, seed={args.seed}, "
        f"pruning {pruning}"
    )

    def merged(
        merge_distance: float, target: int | None, linkage: Linkage
    ) -> tuple[int, float, float, float, int]:
        mapping = prune_and_merge(
            profiles, centroids, min_quality, min_docs, merge_distance, target, linkage
        )
        kept = docs.join(mapping.select("cluster", "super_cluster"), on="cluster").filter(
            pl.col("super_cluster").is_not_null()
        )
        return *scores(kept["super_cluster"].to_numpy(), kept["domain"].to_numpy()), kept.height

    header = (
        f"{'linkage':9} {'cut':>14} {'super':>5} {'purity':>6} {'NMI':>6} {'largest':>7} "
        f"{'docs':>5}"
    )
    print(header)
    print("-" * len(header))
    print(line("fine", f"k={k}", *merged(0.0, None, "single")))
    thresholds = [float(t) for t in args.thresholds.split(",") if t]
    targets = [int(t) for t in args.targets.split(",") if t]
    for linkage in LINKAGES:
        previous = None
        for threshold in thresholds:
            result = merged(threshold, None, linkage)
            if result[0] != previous:  # only where the super-cluster count changes
                print(line(linkage, f"< {threshold:.2f}", *result))
            previous = result[0]
        for target in targets:
            print(line(linkage, f"target {target}", *merged(0.0, target, linkage)))
    default = merged(conf.merge_distance, conf.target_super_clusters, conf.linkage)
    print(line("default", f"{conf.linkage} < {conf.merge_distance:.2f}", *default))

    # plain K-means with one cluster per domain, fitted on the same sample
    n_domains = len(domains)
    plain = fit_kmeans(sample, n_domains, args.niter, args.seed, "never")
    every = pl.concat(
        [
            shards[key].with_columns(
                pl.Series("plain", assign(vectors[key], plain, 65_536, "never")[0])
            )
            for key in keys
        ]
    )
    plain_docs = docs.join(every.select("shard", "row", "plain"), on=["shard", "row"])
    plain_scores = scores(plain_docs["plain"].to_numpy(), plain_docs["domain"].to_numpy())
    print(line("kmeans", f"k={n_domains}", *plain_scores, plain_docs.height))


if __name__ == "__main__":
    main()
