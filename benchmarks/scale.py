"""How each stage's time, memory and output grow with the corpus: 10k, 100k, 1M documents.

    .venv/bin/python benchmarks/scale.py --sizes 10000 100000 1000000
    .venv/bin/python benchmarks/scale.py --sizes 2000 10000 --shard-docs 5000 --encode-up-to 2000
    .venv/bin/python benchmarks/scale.py --sizes 100000 --stages cluster_profiles proxy_pool
                                          # rerun stages on outputs a previous run left

For each size N a synthetic corpus is written once (and reused) under
`<workdir>/n<N>/corpus/` as JSONL shards of --shard-docs documents, then every stage is
materialized through Dagster (`climb_assets.cli.runner.launch`, the same call `climb run`
makes) into `<workdir>/n<N>/outputs/`, with a persistent Dagster instance in
`<workdir>/n<N>/dagster_home/` whose `corpus_shards` partitions are the shard files. Stages
run in order, each in a fresh subprocess (`scale.py _stage NAME ...`), so its memory is its own:

    corpus_documents (one run per shard), shard_embeddings (one run per shard), document_index,
    centroids, cluster_assignments, cluster_profiles, super_clusters, proxy_pool,
    climbmix_dataset

Measured per stage: wall time of the runs (imports, Definitions and instance set-up excluded;
work the asset imports lazily, such as torch or the encoder, included), documents per second
(N / seconds), peak resident memory above the stage's start (the kernel's high-water mark is
reset just before the work, then read back: VmHWM, which `getrusage(RUSAGE_SELF).ru_maxrss`
equals; a subprocess's peak, where the stage starts one, is noted separately), the peak of
anonymous memory above the start (RssAnon sampled every 10 ms: RSS less the pages of
memory-mapped files such as the embeddings, which the kernel reclaims under pressure), and the
bytes of the files the stage writes (from `climb_assets.store.Layout`). Between consecutive
sizes the ratio of each figure is printed: linear growth shows as the size ratio, a bounded
stage as about 1.

Synthetic, not measured from real data:
- the corpus: real sentences of the bundled sample (data/corpus/), each document drawn from one
  source domain (the source first, then its sentences without repeats), with a log-normal
  length (median about 625 characters, mean 740, clipped to 100..8000) and a unique closing
  "Record <serial>." sentence, so that no two are equal and deduplication keeps them all;
- the embeddings above --encode-up-to documents: float16 unit vectors, each a seeded random
  one of 50 fixed centers in 384 dimensions (in 8 tight groups, so the merge finds about as
  many super-clusters as on the sample) plus noise, written in .npy format (np.save's) in
  document order, without Dagster (at or below it the real encoder runs through the asset);
- the optimal mixture: the search (proxy training in bootstrap iterations, predictor,
  final race) is not part of this benchmark; `optimal_mixture.json` is written with the
  super-clusters' token shares as weights, and the dataset's token budget is half the kept
  corpus tokens, so that climbmix_dataset writes a large dataset.

The settings are the defaults (k=48 clusters; execution.batch_docs and sql_memory_mb unless
--batch-docs, --sql-memory-mb) with small proxies (vocab 512, tokenizer trained on 20000
documents). Results go to the terminal
and to `<workdir>/results.json`. A stage that fails (an exception in the asset, an import
error while its code is being rewritten) is reported on one line; the stages that need its
output are skipped, the others and the next sizes still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "corpus"
TARGETS = ROOT / "data" / "targets"
RESULT_MARK = "SCALE_RESULT "

STAGES = (
    "corpus_documents",
    "shard_embeddings",
    "document_index",
    "centroids",
    "cluster_assignments",
    "cluster_profiles",
    "super_clusters",
    "proxy_pool",
    "climbmix_dataset",
)
PER_SHARD = ("corpus_documents", "shard_embeddings")
NEEDS = {
    "corpus_documents": (),
    "shard_embeddings": ("corpus_documents",),
    "document_index": ("corpus_documents",),
    "centroids": ("shard_embeddings", "document_index"),
    "cluster_assignments": ("centroids",),
    "cluster_profiles": ("cluster_assignments", "document_index"),
    "super_clusters": ("cluster_profiles",),
    "proxy_pool": ("super_clusters",),
    "climbmix_dataset": ("super_clusters",),
}

# Drawn lengths; whole sentences overshoot them, so documents have a median of about 625 chars.
MEDIAN_CHARS, SIGMA, MIN_CHARS, MAX_CHARS = 560, 0.6, 100, 8000
# Synthetic embeddings: CENTERS centers in GROUPS tight groups (as domains hold several
# topics), so K-means and the merge find structure as on real vectors; noise per dimension.
CENTERS, GROUPS, SPREAD, DIM, NOISE = 50, 8, 0.3, 384, 0.02
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# --- synthetic corpus ------------------------------------------------------------------------


def sample_units() -> dict[str, tuple[list[str], str, int]]:
    """Per source of the bundled sample: its sentences (long lines split at sentence ends, short
    lines kept whole, as verse and code are line-shaped), the separator its documents use
    between them, and its document count (the weight of the source)."""
    import polars as pl

    frames = []
    for path in sorted(SAMPLE.iterdir()):
        if path.suffix == ".parquet":
            frames.append(pl.read_parquet(path, columns=["text", "source"]))
        elif ".jsonl" in path.name:
            frames.append(pl.read_ndjson(path).select("text", "source"))
    corpus = pl.concat(frames)
    units: dict[str, tuple[list[str], str, int]] = {}
    for (source,), group in sorted(corpus.group_by("source")):
        pieces: list[str] = []
        lengths: list[int] = []
        for text in group["text"]:
            for line in text.splitlines():
                line = line.strip()
                if not line:
                    continue
                lengths.append(len(line))
                pieces.extend(p for p in _SENTENCE_END.split(line) if p)
        line_shaped = float(np.median(lengths)) < 100
        units[str(source)] = (sorted(set(pieces)), "\n" if line_shaped else " ", group.height)
    return units


class SourceStream:
    """A source's sentences in a seeded random order, taken without repeats until all are used,
    then reshuffled: a document never repeats a sentence and consecutive ones share none."""

    def __init__(self, units: list[str], rng: np.random.Generator) -> None:
        self.units, self.rng = units, rng
        self.order = rng.permutation(len(units))
        self.at = 0

    def take(self, chars: int) -> list[str]:
        taken: list[str] = []
        total = 0
        limit = len(self.units)
        while total < chars and len(taken) < limit:
            if self.at == len(self.order):
                self.order, self.at = self.rng.permutation(len(self.units)), 0
            unit = self.units[self.order[self.at]]
            self.at += 1
            taken.append(unit)
            total += len(unit) + 1
        return taken


def synthetic_documents(size: int, seed: int) -> Iterator[dict[str, str]]:
    """`size` distinct documents, one source domain each, streamed one at a time."""
    rng = np.random.default_rng(seed)
    units = sample_units()
    names = sorted(units)
    weights = np.array([units[n][2] for n in names], dtype=float)
    streams = [SourceStream(units[n][0], rng) for n in names]
    joiners = [units[n][1] for n in names]
    block = 10_000
    for start in range(0, size, block):
        count = min(block, size - start)
        sources = rng.choice(len(names), size=count, p=weights / weights.sum())
        lengths = np.clip(
            rng.lognormal(np.log(MEDIAN_CHARS), SIGMA, size=count), MIN_CHARS, MAX_CHARS
        ).astype(int)
        for offset in range(count):
            serial = start + offset
            source = int(sources[offset])
            marker = f"Record {serial}."
            body = joiners[source].join(streams[source].take(lengths[offset] - len(marker)))
            cut = MAX_CHARS - len(marker) - 1
            if len(body) > cut:
                body = body[:cut].rsplit(" ", 1)[0]
            text = f"{body}{joiners[source]}{marker}"
            yield {"id": f"syn-{serial:08d}", "text": text}


def build_corpus(size_dir: Path, size: int, shard_docs: int, seed: int) -> dict[str, Any]:
    """The corpus of `size` documents under size_dir/corpus, built unless already there with
    the same parameters; returns its description."""
    corpus, stamp = size_dir / "corpus", size_dir / "corpus.json"
    wanted = {"size": size, "shard_docs": shard_docs, "seed": seed, "version": 1}
    if stamp.exists() and json.loads(stamp.read_text()).get("params") == wanted:
        return {**json.loads(stamp.read_text()), "reused": True}
    shutil.rmtree(corpus, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    corpus.mkdir(parents=True)
    started = time.perf_counter()
    shards, chars = 0, 0
    handle = None
    for number, doc in enumerate(synthetic_documents(size, seed)):
        if number % shard_docs == 0:
            if handle:
                handle.close()
            handle = (corpus / f"shard-{shards:05d}.jsonl").open("w", encoding="utf-8")
            shards += 1
        chars += len(doc["text"])
        assert handle is not None
        handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
    if handle:
        handle.close()
    info = {
        "params": wanted,
        "shards": shards,
        "mean_chars": round(chars / max(size, 1), 1),
        "bytes": folder_bytes(corpus),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    stamp.write_text(json.dumps(info))
    return {**info, "reused": False}


# --- settings and outputs ----------------------------------------------------------------------


def make_settings(size_dir: Path, args: argparse.Namespace, token_budget: int | None = None):  # noqa: ANN201 - a climb_assets Settings (imported in the stage's process only)
    from climb_assets.settings import Settings

    data: dict[str, Any] = {
        "output_dir": str(size_dir / "outputs"),
        "seed": args.seed,
        "corpus": {"path": str(size_dir / "corpus")},
        "clustering": {"k": args.k},
        "proxy": {
            "vocab_size": 512,
            "tokenizer_sample_docs": 20_000,
            "d_model": 32,
            "n_layers": 1,
            "n_heads": 2,
            "seq_len": 32,
            "batch_size": 8,
            "tokens_per_proxy": 4096,
            "eval_max_tokens": 2048,
        },
        "targets": [
            {"name": "text", "kind": "text", "path": str(TARGETS / "held_out_text.jsonl")},
            {
                "name": "choice",
                "kind": "multiple_choice",
                "path": str(TARGETS / "held_out_choice.jsonl"),
                "metric": "gold_loss",
            },
        ],
    }
    execution = {"batch_docs": args.batch_docs, "sql_memory_mb": args.sql_memory_mb}
    data["execution"] = {key: value for key, value in execution.items() if value}
    if token_budget:
        data["dataset"] = {"token_budget": token_budget}
    return Settings.model_validate(data)


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def stage_outputs(stage: str, layout: Any, shards: list[str]) -> list[Path]:  # noqa: ANN401 - a Layout
    """The files (or folders) `stage` writes."""
    per_shard: dict[str, list[Callable[[str], Path]]] = {
        "corpus_documents": [layout.documents, layout.rejects],
        "shard_embeddings": [layout.embeddings],
        "cluster_assignments": [layout.assignments],
    }
    if stage in per_shard:
        return [path(s) for path in per_shard[stage] for s in shards]
    return {
        "document_index": [layout.document_index, layout.cross_shard_duplicates],
        "centroids": [layout.centroids],
        "cluster_profiles": [layout.cluster_profiles],
        "super_clusters": [layout.super_cluster_map, layout.super_clusters],
        "proxy_pool": [layout.proxy_pool],
        "climbmix_dataset": [layout.dataset],
    }[stage]


# --- one stage, in its own process -------------------------------------------------------------


def status_bytes(field: str) -> int | None:
    """A memory figure of this process from /proc/self/status (Linux), in bytes."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"{field}:\s+(\d+)\s+kB", status)
    return int(found.group(1)) * 1024 if found else None


def vm_hwm_bytes() -> int | None:
    return status_bytes("VmHWM")


def rss_anon_bytes() -> int | None:
    """Anonymous resident memory: RSS less the pages of memory-mapped files (embeddings read
    through np.load(mmap_mode="r")), which the kernel drops under pressure."""
    return status_bytes("RssAnon")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class AnonPeak:
    """The highest RssAnon seen while the block runs, sampled every 10 ms by a thread (the
    kernel keeps a high-water mark of RSS only, file-backed pages included)."""

    def __init__(self) -> None:
        import threading

        self.start = rss_anon_bytes() or 0
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_anon_bytes() or 0)

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_bytes() or 0)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = matrix.astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def write_synthetic_embeddings(layout: Any, shards: list[str], seed: int) -> int:  # noqa: ANN401 - a Layout
    """Float16 unit vectors for every document of every shard, in document order: each a seeded
    random one of CENTERS fixed centers (in GROUPS groups) plus noise. Returns the count."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    groups = unit_rows(rng.standard_normal((GROUPS, DIM)))
    offsets = unit_rows(rng.standard_normal((CENTERS, DIM)))
    centers = unit_rows(groups[np.arange(CENTERS) % GROUPS] + SPREAD * offsets)
    written = 0
    for number, shard in enumerate(sorted(shards)):
        rows = pq.ParquetFile(layout.documents(shard)).metadata.num_rows
        rng = np.random.default_rng([seed, number])
        path = layout.embeddings(shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, DIM))
        for start in range(0, rows, 16_384):
            n = min(16_384, rows - start)
            vectors = centers[rng.integers(CENTERS, size=n)]
            vectors += rng.standard_normal((n, DIM), dtype=np.float32) * NOISE
            out[start : start + n] = unit_rows(vectors).astype(np.float16)
        out.flush()
        del out
        written += rows
    return written


def write_synthetic_mixture(layout: Any) -> tuple[int, int]:  # noqa: ANN401 - a Layout
    """optimal_mixture.json with the super-clusters' token shares as weights; returns (kept
    corpus tokens, the dataset token budget: half of them)."""
    import polars as pl

    supers = pl.read_parquet(layout.super_clusters).sort("super_cluster")
    shares = zip(supers["super_cluster"], supers["token_share"], strict=True)
    weights = {str(k): float(v) for k, v in shares}
    tokens = int(supers["n_tokens"].sum())
    mixture = {
        "weights": weights,
        "predicted_objective": 0.0,
        "predicted_spread": 0.0,
        "choice_method": "synthetic (benchmarks/scale.py: token shares, no search)",
        "predicted_choice": weights,
        "predicted_choice_method": "synthetic",
        "final_race": None,
        "region_size": 0,
        "objective_direction": "higher is better",
        "best_observed_objective": 0.0,
        "best_observed_predicted": 0.0,
        "best_observed_weights": weights,
        "caps": {k: 1.0 for k in weights},
        "iterations": [],
        "targets": [],
        "synthetic": True,
    }
    layout.optimal_mixture.parent.mkdir(parents=True, exist_ok=True)
    layout.optimal_mixture.write_text(json.dumps(mixture, indent=1))
    return tokens, max(1, tokens // 2)


def run_errors(result: Any) -> str:  # noqa: ANN401 - an ExecuteInProcessResult
    """The innermost error message of each failed step, on one line."""
    messages = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = getattr(event.event_specific_data, "error", None)
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            lines = error.message.strip().splitlines() or [""]
            text = re.sub(r"^[\w.]+: ", "", lines[0])  # the message repeats the class name
            messages.append(f"{error.cls_name}: {text}")
    return "; ".join(messages) or "run failed (no step failure recorded)"


def failed_checks(result: Any) -> list[str]:  # noqa: ANN401 - an ExecuteInProcessResult
    try:
        evaluations = result.get_asset_check_evaluations()
    except Exception:  # noqa: BLE001 - only a note in the output
        return []
    return [e.check_name for e in evaluations if not e.passed]


def run_stage(stage: str, args: argparse.Namespace) -> dict[str, Any]:
    """Materialize one stage for every partition it has; its measurements."""
    import psutil

    size_dir = Path(args.workdir) / f"n{args.size}"
    os.environ["DAGSTER_HOME"] = str(size_dir / "dagster_home")
    record: dict[str, Any] = {"stage": stage, "size": args.size, "synthetic": False, "notes": []}

    import dagster as dg

    from climb_assets.cli.runner import launch
    from climb_assets.definitions import build_definitions
    from climb_assets.defs.shard_state import register_shards
    from climb_assets.store import Layout

    settings = make_settings(size_dir, args)
    layout = Layout(settings.output_dir)
    if stage == "climbmix_dataset":
        tokens, budget = write_synthetic_mixture(layout)
        settings = make_settings(size_dir, args, token_budget=budget)
        record["synthetic"] = True
        record["notes"].append(
            f"mixture = token shares; budget {budget:,} of {tokens:,} kept tokens"
        )
    instance = dg.DagsterInstance.get()
    shards = register_shards(settings, instance)
    defs = build_definitions(settings)
    defs.resolve_implicit_global_asset_job_def()  # built once here, not inside the measurement
    synthetic = stage == "shard_embeddings" and args.size > args.encode_up_to
    keys: list[str | None] = list(shards) if stage in PER_SHARD else [None]

    process = psutil.Process()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rss_before = process.memory_info().rss
    reset = reset_peak_rss()
    anon = AnonPeak().__enter__()
    started = time.perf_counter()
    if synthetic:
        record["synthetic"] = True
        record["notes"].append(
            f"vectors: {CENTERS} centers in {GROUPS} groups + noise, {DIM} dims, no encoder"
        )
        write_synthetic_embeddings(layout, shards, args.seed)
        runs = 0
    else:
        if stage == "shard_embeddings":
            record["notes"].append(f"real encoder ({settings.embedding.model})")
        runs = 0
        for key in keys:
            result = launch(defs, instance, (stage,), key, "ERROR", lambda line: None)
            runs += 1
            if not result.success:
                record["error"] = f"[{key}] {run_errors(result)}" if key else run_errors(result)
                break
            if failed := failed_checks(result):
                record["notes"].append(f"failed checks: {', '.join(sorted(set(failed)))}")
    seconds = time.perf_counter() - started
    anon.__exit__()
    ru_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    hwm = vm_hwm_bytes() if reset else None
    peak = hwm if hwm is not None else ru_peak
    record |= {
        "seconds": round(seconds, 3),
        "runs": runs,
        "shards": len(shards),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "peak_rss_above_start_mb": round(max(peak - rss_before, 0) / 2**20, 1),
        "peak_anon_above_start_mb": round(max(anon.peak - anon.start, 0) / 2**20, 1),
        "peak_source": "VmHWM after reset" if hwm is not None else "ru_maxrss (no reset)",
        "ru_maxrss_mb": round(ru_peak / 2**20, 1),
        "output_bytes": sum(folder_bytes(p) for p in stage_outputs(stage, layout, shards)),
    }
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if children_after > children_before:  # a subprocess of the work outgrew the earlier ones
        record["subprocess_peak_mb"] = round(children_after / 1024, 1)
        # Dagster forks `tail` processes for its compute logs: a forked child counts the RSS
        # it shares with this process at fork time, so only a subprocess that outgrew this
        # process's own peak really used memory of its own.
        if children_after * 1024 > peak + 2**20:
            record["notes"].append(f"subprocess peak {record['subprocess_peak_mb']} MB")
    if "error" not in record:
        record |= output_facts(stage, layout)
    return record


def output_facts(stage: str, layout: Any) -> dict[str, Any]:  # noqa: ANN401 - a Layout
    """A few counts that tell whether the stage's output is what a real corpus would give."""
    import polars as pl
    import pyarrow.parquet as pq

    try:
        if stage == "document_index":
            return {"kept_documents": pq.ParquetFile(layout.document_index).metadata.num_rows}
        if stage == "super_clusters":
            mapping = pl.read_parquet(layout.super_cluster_map)
            supers = pl.read_parquet(layout.super_clusters)
            return {
                "super_clusters": supers.height,
                "pruned_clusters": mapping["super_cluster"].null_count(),
            }
        if stage == "climbmix_dataset":
            files = layout.dataset_shards()
            return {"dataset_rows": sum(pq.ParquetFile(f).metadata.num_rows for f in files)}
    except (OSError, pl.exceptions.PolarsError) as err:
        return {"facts_error": str(err)}
    return {}


def stage_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scale.py _stage")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--encode-up-to", type=int, required=True)
    parser.add_argument("--batch-docs", type=int)
    parser.add_argument("--sql-memory-mb", type=int)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        record = run_stage(args.stage, args)
    except Exception as err:  # noqa: BLE001 - reported as the stage's failure
        import traceback

        traceback.print_exc()
        last = str(err).strip().splitlines()[0] if str(err).strip() else ""
        record = {"stage": args.stage, "size": args.size, "error": f"{type(err).__name__}: {last}"}
    print(RESULT_MARK + json.dumps(record), flush=True)
    return 0


# --- the driver --------------------------------------------------------------------------------


def launch_stage(stage: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_stage",
        stage,
        f"--size={size}",
        f"--workdir={args.workdir}",
        f"--encode-up-to={args.encode_up_to}",
        f"--k={args.k}",
        f"--seed={args.seed}",
    ]
    if args.batch_docs:
        command.append(f"--batch-docs={args.batch_docs}")
    if args.sql_memory_mb:
        command.append(f"--sql-memory-mb={args.sql_memory_mb}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.stage_timeout
        )
    except subprocess.TimeoutExpired:
        return {"stage": stage, "size": size, "error": f"timed out after {args.stage_timeout} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"stage": stage, "size": size, "error": f"exit {proc.returncode}: {tail[0]}"}
    record = json.loads(lines[-1][len(RESULT_MARK) :])
    record["process_seconds"] = round(time.perf_counter() - started, 1)
    if "error" in record:
        log = Path(args.workdir) / f"n{size}" / f"{stage}.log"
        log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        record["log"] = str(log)
    return record


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"


def print_table(size: int, records: list[dict[str, Any]], corpus: dict[str, Any]) -> None:
    print(
        f"\n== N = {size:,} documents: {corpus['shards']} shard(s), "
        f"{corpus['bytes'] / 2**20:.1f} MB JSONL, mean {corpus['mean_chars']} chars"
        + (" (reused)" if corpus["reused"] else f" (built in {corpus['build_seconds']} s)")
    )
    header = (
        f"{'stage':<20} {'seconds':>9} {'docs/s':>10} {'peak RSS+ MB':>13} "
        f"{'anon+ MB':>9} {'output MB':>10} {'synthetic':<9}  notes"
    )
    print(header)
    print("-" * len(header))
    for r in records:
        if "error" in r or "skipped" in r:
            what = f"SKIPPED ({r['skipped']})" if "skipped" in r else f"FAILED: {r['error']}"
            if "log" in r:
                what += f" (log: {r['log']})"
            print(f"{r['stage']:<20} {what}")
            continue
        notes = list(r.get("notes", []))
        if "kept_documents" in r:
            notes.append(f"{r['kept_documents']} documents kept")
        if "super_clusters" in r:
            notes.append(f"{r['super_clusters']} super-clusters, {r['pruned_clusters']} pruned")
        if "dataset_rows" in r:
            notes.append(f"{r['dataset_rows']} rows")
        print(
            f"{r['stage']:<20} {r['seconds']:>9.2f} {size / max(r['seconds'], 1e-9):>10.0f} "
            f"{r['peak_rss_above_start_mb']:>13.1f} {r.get('peak_anon_above_start_mb', 0):>9.1f} "
            f"{r['output_bytes'] / 2**20:>10.2f} "
            f"{'YES' if r.get('synthetic') else 'no':<9}  " + "; ".join(notes)
        )


def ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if "error" in a or "error" in b or "skipped" in a or "skipped" in b:
        return None
    x, y = a.get(key), b.get(key)
    if x is None or y is None or x <= 0:
        return None
    return y / x


def print_ratios(results: list[dict[str, Any]]) -> None:
    for before, after in zip(results, results[1:], strict=False):
        n0, n1 = before["size"], after["size"]
        print(f"\n== ratios {n0:,} -> {n1:,} (size x{n1 / n0:.3g})")
        header = (
            f"{'stage':<20} {'time x':>8} {'peak RSS x':>11} {'anon x':>7} {'output x':>9} "
            f"{'docs/s x':>9}"
        )
        print(header)
        print("-" * len(header))
        old = {r["stage"]: r for r in before["stages"]}
        for r in after["stages"]:
            if r["stage"] not in old:
                continue
            o = old[r["stage"]]
            t = ratio(o, r, "seconds")
            print(
                f"{r['stage']:<20} {fmt(t):>8} {fmt(ratio(o, r, 'peak_rss_above_start_mb')):>11} "
                f"{fmt(ratio(o, r, 'peak_anon_above_start_mb')):>7} "
                f"{fmt(ratio(o, r, 'output_bytes')):>9} "
                f"{fmt(None if t is None else (n1 / n0) / t):>9}"
            )


def machine() -> dict[str, Any]:
    import psutil

    memory = psutil.virtual_memory()
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(memory.total / 2**30, 1),
        "available_gb": round(memory.available / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_stage":
        return stage_main(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--shard-docs", type=int, default=100_000, help="documents per shard")
    parser.add_argument(
        "--encode-up-to",
        type=int,
        default=10_000,
        help="real encoder up to this corpus size, synthetic embeddings above",
    )
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / "results" / "scale"))
    parser.add_argument("--batch-docs", type=int, help="execution.batch_docs (default: as set)")
    parser.add_argument(
        "--sql-memory-mb", type=int, help="execution.sql_memory_mb (default: as set)"
    )
    parser.add_argument("--k", type=int, default=48, help="K-means clusters")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="run only these (outputs are kept from an earlier run unless corpus_documents is "
        "among them)",
    )
    parser.add_argument("--stage-timeout", type=float, help="seconds per stage process")
    args = parser.parse_args()
    args.workdir = str(Path(args.workdir).resolve())
    python = os.path.relpath(sys.executable, ROOT)
    command = " ".join([python if not python.startswith("..") else sys.executable, *sys.argv])
    info = machine()
    print(f"command: {command}")
    print(
        f"machine: {info['cpus']} cpus ({info['cpus_usable']} usable), {info['memory_gb']} GB "
        f"memory ({info['available_gb']} GB available), load {info['load_average']}, "
        f"{info['platform']}, Python {info['python']}"
    )
    print(
        "synthetic: corpus (sample sentences), embeddings above --encode-up-to="
        f"{args.encode_up_to}, optimal mixture (token shares; the search is not run)"
    )
    results: list[dict[str, Any]] = []
    out_file = Path(args.workdir) / "results.json"
    for size in args.sizes:
        size_dir = Path(args.workdir) / f"n{size}"
        print(f"\nN = {size:,}: corpus ...", flush=True)
        corpus = build_corpus(size_dir, size, args.shard_docs, args.seed)
        if "corpus_documents" in args.stages:
            shutil.rmtree(size_dir / "outputs", ignore_errors=True)
            shutil.rmtree(size_dir / "dagster_home", ignore_errors=True)
        home = size_dir / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        records: list[dict[str, Any]] = []
        bad: set[str] = set()
        for stage in args.stages:
            if blocked := [s for s in NEEDS[stage] if s in bad]:
                records.append({"stage": stage, "size": size, "skipped": f"{blocked[0]} failed"})
                bad.add(stage)
                print(f"  {stage}: skipped ({blocked[0]} failed)", flush=True)
                continue
            print(f"  {stage} ...", end=" ", flush=True)
            record = launch_stage(stage, size, args)
            records.append(record)
            if "error" in record:
                bad.add(stage)
                print(f"FAILED: {record['error']}", flush=True)
            else:
                print(
                    f"{record['seconds']:.1f} s, peak +{record['peak_rss_above_start_mb']} MB",
                    flush=True,
                )
        results.append({"size": size, "corpus": corpus, "stages": records})
        out_file.write_text(
            json.dumps({"command": command, "machine": info, "results": results}, indent=1)
        )
    for entry in results:
        print_table(entry["size"], entry["stages"], entry["corpus"])
    print_ratios(results)
    print(f"\nresults: {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
