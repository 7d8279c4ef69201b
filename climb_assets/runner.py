"""`climb run`: every asset in dependency order, into the persistent Dagster instance.

Dagster runs one partition of a dynamic (shard) or iteration axis per run, so the plan (the
stages `graph.stages` derives from the Definitions) is walked in order, one in-process run per
partition, printing progress.
The same runs, with the same run ids and metadata, then show in `dagster dev`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from climb_assets.core.shared.run_owner import Owner
from climb_assets.graph import Stage, stages
from climb_assets.run_guard import owner_tags, recover_dead_runs, wait_for_pools
from climb_assets.settings import Settings
from climb_assets.shard_state import register_shards


def project_instance() -> dg.DagsterInstance:
    """$DAGSTER_HOME's instance when set, else the one `dagster.yaml` in this folder describes
    (the same one `dagster dev` uses when started here)."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    if Path("dagster.yaml").is_file():
        return dg.DagsterInstance.from_config(str(Path.cwd()))
    raise RuntimeError(
        "no Dagster instance: run `climb` from the project root (where dagster.yaml is) "
        "or set DAGSTER_HOME"
    )


def check_targets(settings: Settings) -> None:
    """Parse every target file now, so a malformed one fails the run before hours of embedding
    and proxy training, with an error naming the file and line."""
    from climb_assets.core.search.targets import load_target

    for target in [*settings.targets, *settings.evaluation.targets]:
        load_target(target)


def check_corpus_fits(settings: Settings, shards: list[str]) -> str:
    """The corpus's size, from a bounded look at its shards; raises when its outputs would not
    fit on the output folder's disk, before hours of work end in a full disk."""
    from climb_assets.core.corpus.estimate import (
        OutputPlan,
        disk_shortfall,
        estimate_corpus,
        format_bytes,
    )
    from climb_assets.core.search.mixtures import pool_token_limit

    estimate = estimate_corpus(settings.corpus.path / shard for shard in shards)
    plan = OutputPlan(
        embedding_dimension(settings), pool_token_limit(settings), settings.dataset.token_budget
    )
    if problem := disk_shortfall(estimate, plan, Path(settings.output_dir)):
        raise OSError(problem)
    return f"{estimate.describe()}; outputs about {format_bytes(estimate.output_bytes(plan))}"


def describe_shard_work(settings: Settings, shards: list[str], sample: int = 256) -> str:
    """How long ingest and embedding of `shards` will take on this machine, from their size and
    the speed measured on a few of their documents (the encoder loaded here is the one the
    embedding steps of this process use, so measuring costs little more than the sample)."""
    import time

    from climb_assets.core.corpus.estimate import (
        estimate_corpus,
        format_duration,
        sample_texts,
    )

    todo = estimate_corpus(settings.corpus.path / shard for shard in shards)
    texts = sample_texts(settings.corpus.path / shards[0], settings.corpus.text_field, sample)
    line = f"to process: {len(shards)} shard(s), about {todo.documents:,} documents"
    if not texts:
        return line
    started = time.perf_counter()
    _ingest_sample(texts, settings)
    ingest = len(texts) / max(time.perf_counter() - started, 1e-9)
    line += f"; ingest about {format_duration(todo.documents / ingest)} ({ingest:,.0f} docs/s)"
    if settings.execution.backend != "local":
        return line + "; embedding on Ray"
    embed = _embedding_rate(texts[:32], settings)
    return (
        line + f", embedding about {format_duration(todo.documents / embed)} ({embed:,.1f} docs/s)"
    )


def _ingest_sample(texts: list[str], settings: Settings) -> None:
    from climb_assets.assets.corpus import token_counter_for
    from climb_assets.core.corpus.documents import normalize_text
    from climb_assets.core.corpus.quality import quality_signals

    normalized = [normalize_text(text) for text in texts]
    token_counter_for(settings.embedding.model)(normalized)
    quality_signals(normalized)


def _embedding_rate(texts: list[str], settings: Settings) -> float:
    import time

    from climb_assets.assets.clustering import shared_encoder
    from climb_assets.core.clustering.embedding import encode

    model = shared_encoder(settings.embedding)  # loaded before the clock: the steps reuse it
    encode(model, texts[:4], settings.embedding.batch_size)  # the first call warms kernels up
    started = time.perf_counter()
    encode(model, texts, settings.embedding.batch_size)
    return len(texts) / max(time.perf_counter() - started, 1e-9)


def embedding_dimension(settings: Settings) -> int:
    """The encoder's width from its config.json, without loading it; 768 when unknown."""
    import json

    from climb_assets.core.clustering.embedding import model_location

    try:
        config = Path(model_location(settings.embedding.model)) / "config.json"
        return int(json.loads(config.read_text())["hidden_size"])
    except (OSError, KeyError, TypeError, ValueError, ImportError):
        return 768


def shard_is_current(
    instance: dg.DagsterInstance, stage: Stage, shard: str, settings: Settings
) -> bool:
    """True when every asset of a per-shard stage was last materialized (by `climb run`, the UI
    or the daemon) from the same file, settings and code, and its output files still exist."""
    from climb_assets.shard_state import shard_input_fingerprint
    from climb_assets.shard_state import shard_is_current as current

    expected = shard_input_fingerprint(settings, shard)
    return current(instance, settings, shard, expected, stage.assets)


def partition_keys(stage: Stage, shards: list[str], settings: Settings) -> list[str | None]:
    if stage.axis == "shards":
        return list(shards)
    if stage.axis == "iterations":
        from climb_assets.partitions import iteration_key

        return [iteration_key(i) for i in range(1, settings.iterations + 1)]
    return [None]


def run_pipeline(
    defs: dg.Definitions,
    settings: Settings,
    instance: dg.DagsterInstance,
    plan: tuple[Stage, ...] | None = None,
    echo: Callable[[str], None] = print,
    log_level: str = "WARNING",
    force: bool = False,
    evaluate: bool = False,
) -> list[str]:
    """Materialize `plan` (by default every stage of `defs`) in order; returns the run ids.
    Stops at the first failed run.

    Per-shard work whose inputs are unchanged since its last materialization is skipped unless
    `force`; every corpus-wide step runs. Optional stages run only with `evaluate`.
    Runs left unfinished by a `climb` process that died are marked failed first."""
    plan = stages(defs) if plan is None else plan
    if not evaluate:
        plan = tuple(s for s in plan if not s.optional)
    check_targets(settings)
    recover_dead_runs(instance, echo)
    shards = register_shards(settings, instance)
    echo(f"corpus under {settings.corpus.path}: {check_corpus_fits(settings, shards)}")
    steps = [(stage, key) for stage in plan for key in partition_keys(stage, shards, settings)]
    if not force:
        current = [
            (st, k)
            for st, k in steps
            if st.axis == "shards" and k and shard_is_current(instance, st, k, settings)
        ]
        for stage, key in current:
            echo(f"up to date, skipped: {', '.join(stage.assets)} [{key}]")
        steps = [step for step in steps if step not in current]
    if todo := sorted({key for stage, key in steps if stage.axis == "shards" and key}):
        echo(describe_shard_work(settings, todo))
    run_ids: list[str] = []
    started_all = time.perf_counter()
    for number, (stage, key) in enumerate(steps, start=1):
        label = ", ".join(stage.assets) + (f" [{key}]" if key else "")
        echo(f"[{number}/{len(steps)}] {label} ...")
        started = time.perf_counter()
        result = launch(defs, instance, stage.assets, key, log_level, echo)
        run_ids.append(result.run_id)
        if not result.success:
            raise RuntimeError(
                f"{label} failed (run {result.run_id}); see `dagster dev` or the log above"
            )
        echo(f"[{number}/{len(steps)}] {label} done in {time.perf_counter() - started:.1f} s")
    echo(f"all {len(steps)} runs succeeded in {time.perf_counter() - started_all:.1f} s")
    return run_ids


def launch(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    assets: tuple[str, ...],
    partition_key: str | None = None,
    log_level: str = "WARNING",
    echo: Callable[[str], None] = print,
) -> dg.ExecuteInProcessResult:
    """One in-process run of `assets`, tagged with this process as its owner (so a later
    `climb` can tell if it died), once the concurrency pools its steps use have a free slot."""
    graph = defs.resolve_asset_graph()
    pools = {p for a in assets for p in graph.get(dg.AssetKey(a)).pools or ()}
    wait_for_pools(instance, pools, echo)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance,
        partition_key=partition_key,
        asset_selection=[dg.AssetKey(a) for a in assets],
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        tags=owner_tags(Owner.current()),
        raise_on_error=False,
    )
    if was_interrupted(result):  # Dagster turns Ctrl-C/SIGTERM into a failed run
        raise KeyboardInterrupt(f"run {result.run_id} interrupted")
    return result


def was_interrupted(result: dg.ExecuteInProcessResult) -> bool:
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None and error.cls_name == "DagsterExecutionInterruptedError":
            return True
    return False
