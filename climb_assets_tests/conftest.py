"""Shared fixtures: a small slice of the bundled sample and settings sized for tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from climb_assets.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE_CORPUS = PROJECT / "data" / "corpus"
SAMPLE_TARGETS = PROJECT / "data" / "targets"


def read_sample_shard(path: Path) -> pl.DataFrame:
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    return pl.read_ndjson(path)  # polars reads .gz and .zst JSONL transparently


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="session")
def slice_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~360 documents of the sample in three shards (JSONL, gzip JSONL, Parquet)."""
    root = tmp_path_factory.mktemp("corpus")
    shards = sorted(SAMPLE_CORPUS.iterdir())
    frames = [read_sample_shard(p).select("id", "text", "source") for p in shards]
    every = pl.concat(frames).sort("id")
    picked = every.filter(pl.int_range(pl.len()).over("source") < 60).sort("id")
    parts = [picked.gather_every(3, offset) for offset in range(3)]
    write_jsonl(parts[0].to_dicts(), root / "a.jsonl")
    import gzip

    with gzip.open(root / "b.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in parts[1].to_dicts())
    parts[2].write_parquet(root / "c.parquet")
    return root


def small_settings(corpus: Path, output: Path, iterations: list[int] | None = None) -> Settings:
    """Settings sized so a test run of every stage takes seconds, not minutes."""
    return Settings.model_validate(
        {
            "output_dir": str(output),
            "corpus": {"path": str(corpus)},
            "clustering": {"k": 8, "niter": 10, "min_cluster_docs": 2, "min_mean_quality": 0.0},
            "proxy": {
                "vocab_size": 512,
                "tokenizer_sample_docs": 500,
                "d_model": 32,
                "n_layers": 1,
                "n_heads": 2,
                "seq_len": 32,
                "batch_size": 8,
                "tokens_per_proxy": 4096,
                "eval_max_tokens": 2048,
            },
            "search": {
                "proxies_per_iteration": iterations or [4, 3],
                "candidate_pool_size": 500,
                "top_k_for_sampling": 4,
                "final_top_k": 4,
                "final_race_seeds": 2,
                "cv_folds": 3,
            },
            "targets": [
                {
                    "name": "text",
                    "kind": "text",
                    "path": str(SAMPLE_TARGETS / "held_out_text.jsonl"),
                    "max_examples": 20,
                },
                {
                    "name": "choice",
                    "kind": "multiple_choice",
                    "path": str(SAMPLE_TARGETS / "held_out_choice.jsonl"),
                    "max_examples": 20,
                },
            ],
            "dataset": {"token_budget": 20_000, "rows_per_shard": 50},
        }
    )


def with_tiny_evaluation(settings: Settings) -> Settings:
    """Evaluation models as small as the proxies, two seeds, and one evaluation-only target."""
    from climb_assets.settings import EvaluationSettings

    extra = settings.targets[0].model_copy(update={"name": "eval_text", "max_examples": 10})
    evaluation = EvaluationSettings(
        d_model=32, n_layers=1, n_heads=2, tokens=5_000, seeds=2, targets=[extra]
    )
    return settings.model_copy(update={"evaluation": evaluation})


@pytest.fixture(scope="session")
def live_dagster(tmp_path_factory: pytest.TempPathFactory):
    """One `dagster dev` shared by the lineage and browser tests. No sensor or automation runs
    in it, so only the tests launch runs; its corpus folder gets two small shards once the
    sensors are stopped."""
    from climb_assets_tests.live import dagster_dev, write_first_shards

    workdir = tmp_path_factory.mktemp("live")
    corpus = workdir / "corpus"
    corpus.mkdir()
    settings = with_tiny_evaluation(small_settings(corpus, workdir / "outputs"))
    with dagster_dev(settings, workdir, automation=False) as dev:
        write_first_shards(corpus)
        yield dev


@pytest.fixture(scope="session")
def live_search(live_dagster) -> str:  # noqa: ANN001 - a live.DagsterDev
    """The whole pipeline in the shared `dagster dev`, the search by a UI backfill; the
    backfill's final status. Shared by the backfill and browser tests (run it once)."""
    from climb_assets_tests.live import search_by_backfill

    return search_by_backfill(live_dagster)
