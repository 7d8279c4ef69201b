"""`climb run`: every asset in dependency order, into the persistent Dagster instance.

Dagster runs one partition of a dynamic (shard) or iteration axis per run, so the plan (the
stages `graph.stages` derives from the Definitions) is walked in order, one in-process run per
partition, printing progress.
The same runs, with the same run ids and metadata, then show in `dg dev`.

A failed step is told in one line (`StepFailed`): Dagster's console shows warnings but not the
stack of a failure (unless `debug`), and every event goes to a log file of the `climb` command
(`<output_dir>/logs/`) as well as to the instance's event log the UI reads.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from climb_assets.core.shared.run_owner import Owner
from climb_assets.failures import one_line
from climb_assets.graph import Stage, stages
from climb_assets.progress import ConsoleProgress, is_for_display
from climb_assets.run_guard import owner_tags, recover_dead_runs, wait_for_pools
from climb_assets.settings import Settings
from climb_assets.shard_state import register_shards


def project_instance() -> dg.DagsterInstance:
    """$DAGSTER_HOME's instance when set, else the one `dagster.yaml` in this folder describes
    (the same one `dg dev` uses when started here with DAGSTER_HOME=$PWD)."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    if Path("dagster.yaml").is_file():
        return dg.DagsterInstance.from_config(str(Path.cwd()))
    raise RuntimeError(
        "no Dagster instance: run `climb` from the project root (where dagster.yaml is) "
        "or set DAGSTER_HOME"
    )


class StepFailed(RuntimeError):
    """A run of `climb` failed in a step; the message is the step and its cause in one line,
    `details` the step's full traceback (shown by `climb --debug`)."""

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details


def log_file(settings: Settings, command: str) -> Path:
    """Where `command`'s Dagster events go: one file per invocation under the output folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(settings.output_dir) / "logs" / f"climb-{command}-{stamp}-{os.getpid()}.log"


def preflight(settings: Settings) -> None:
    """What can be checked before any step: the corpus folder, the targets and the encoder."""
    check_corpus_folder(settings)
    check_targets(settings)
    check_encoder(settings)


def check_corpus_folder(settings: Settings) -> None:
    from climb_assets.settings import SettingsError

    path = Path(settings.corpus.path)
    if path.exists() and not path.is_dir():
        raise SettingsError(f"corpus.path {path} is a file, not a folder of shard files")


class ShardPreviewError(ValueError):
    """A shard whose first bytes cannot be read (not the format its name says, say)."""


def _named_shard_errors(
    settings: Settings, shards: list[str], look: Callable[[Path], object]
) -> None:
    """Run look(path) on each shard, raising ShardPreviewError naming the one it fails on."""
    for shard in shards:
        path = Path(settings.corpus.path) / shard
        try:
            look(path)
        except Exception as err:  # any reader's error: only the message is shown
            raise ShardPreviewError(
                f"corpus shard {path}: cannot read it ({type(err).__name__}: {one_line(str(err))})"
            ) from err


def first_record_fields(path: Path) -> list[str] | None:
    """The fields of a shard's first record (a Parquet file's columns), or None when it has
    none or cannot be read: the ingest step then says why."""
    import json

    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        with _open_text(path, name) as fh:
            line = next((line for line in fh if line.strip()), None)
        value = json.loads(line) if line is not None else None
    except Exception:  # noqa: BLE001 - only a hint: the ingest step reports unreadable files
        return None
    return [str(key) for key in value] if isinstance(value, dict) else None


def _open_text(path: Path, name: str):  # noqa: ANN202 - a text stream
    import gzip
    import io

    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if name.endswith(".zst"):
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True)
        return io.TextIOWrapper(reader, encoding="utf-8")
    return path.open(encoding="utf-8")


def text_field_warnings(settings: Settings, shards: list[str]) -> list[str]:
    """A warning per shard whose first record lacks corpus.text_field, naming its fields."""
    field = settings.corpus.text_field
    warnings = []
    for shard in shards:
        fields = first_record_fields(Path(settings.corpus.path) / shard)
        if fields is not None and field not in fields:
            warnings.append(
                f"warning: {shard}: corpus.text_field {field!r} is not a field of its first "
                f"record (fields: {', '.join(fields) or 'none'}); its records will be rejected"
            )
    return warnings


def check_encoder(settings: Settings) -> None:
    """The encoder must load offline and on the device asked for: say so now, not minutes into
    the embedding step."""
    from climb_assets.core.clustering.embedding import PACKAGED_MODEL
    from climb_assets.core.shared.precision import resolve_device

    model = settings.embedding.model
    if model != PACKAGED_MODEL and not Path(model).is_dir() and not _in_hf_cache(model):
        raise FileNotFoundError(
            f"embedding.model {model!r} is neither {PACKAGED_MODEL!r} (the packaged model), a "
            "folder, nor a model in the Hugging Face cache (nothing is downloaded)"
        )
    if settings.embedding.device != "auto":
        resolve_device(settings.embedding.device)  # raises when the device is not there


def _in_hf_cache(model: str) -> bool:
    """True when `model` names a model repository in the local Hugging Face cache."""
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        return False  # a path, and not an existing folder
    try:
        from huggingface_hub import try_to_load_from_cache

        # sentence-transformers also looks a bare name up under its own organisation
        names = [model] if "/" in model else [model, f"sentence-transformers/{model}"]
        return any(isinstance(try_to_load_from_cache(n, "config.json"), str) for n in names)
    except (ImportError, ValueError):  # not a valid repository name
        return False


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

    try:
        estimate = estimate_corpus(settings.corpus.path / shard for shard in shards)
    except Exception:
        _named_shard_errors(settings, shards, lambda path: estimate_corpus([path]))
        raise
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
    texts: list[str] = []
    field = settings.corpus.text_field
    _named_shard_errors(
        settings, shards[:1], lambda p: texts.extend(sample_texts(p, field, sample))
    )
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
    debug: bool = False,
) -> list[str]:
    """Materialize `plan` (by default every stage of `defs`) in order; returns the run ids.
    Stops at the first failed run.

    Per-shard work whose inputs are unchanged since its last materialization is skipped unless
    `force`; every corpus-wide step runs. Optional stages run only with `evaluate`.
    Runs left unfinished by a `climb` process that died are marked failed first."""
    plan = stages(defs) if plan is None else plan
    if not evaluate:
        plan = tuple(s for s in plan if not s.optional)
    preflight(settings)
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
        for warning in text_field_warnings(settings, todo):
            echo(warning)
        echo(describe_shard_work(settings, todo))
    run_ids: list[str] = []
    started_all = time.perf_counter()
    log = log_file(settings, "run")
    for number, (stage, key) in enumerate(steps, start=1):
        label = ", ".join(stage.assets) + (f" [{key}]" if key else "")
        echo(f"[{number}/{len(steps)}] {label} ...")
        started = time.perf_counter()
        result = launch(defs, instance, stage.assets, key, log_level, echo, log, debug)
        run_ids.append(result.run_id)
        check_success(result, log, key)
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
    log: Path | None = None,
    debug: bool = False,
) -> dg.ExecuteInProcessResult:
    """One in-process run of `assets`, tagged with this process as its owner (so a later
    `climb` can tell if it died), once the concurrency pools its steps use have a free slot.

    The console shows Dagster's records from `log_level` up, less the errors (a failure's stack)
    unless `debug`, and the steps' progress lines (`climb_assets.progress`) at any level; `log`
    gets every record. The instance's event log keeps everything."""
    graph = defs.resolve_asset_graph()
    pools = {p for a in assets for p in graph.get(dg.AssetKey(a)).pools or ()}
    wait_for_pools(instance, pools, echo)
    display = ConsoleProgress(sys.stderr)  # the steps' progress: a bar on a terminal, else lines
    loggers: dict[str, dg.LoggerDefinition] = {"console": climb_console_logger(display)}
    config: dict = {"console": {"config": {"log_level": log_level, "show_errors": debug}}}
    if log is not None:
        loggers["file"] = climb_file_logger
        config["file"] = {"config": {"path": str(log)}}
    job = defs.resolve_implicit_global_asset_job_def().with_logger_defs(loggers)
    try:
        result = job.execute_in_process(
            instance=instance,
            partition_key=partition_key,
            asset_selection=[dg.AssetKey(a) for a in assets],
            run_config={"loggers": config},
            tags=owner_tags(Owner.current()),
            raise_on_error=False,
        )
    finally:
        display.close()  # a step that failed midway leaves its bar: take it off the screen
    if was_interrupted(result):  # Dagster turns Ctrl-C/SIGTERM into a failed run
        raise KeyboardInterrupt(f"run {result.run_id} interrupted")
    return result


def was_interrupted(result: dg.ExecuteInProcessResult) -> bool:
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None and error.cls_name == "DagsterExecutionInterruptedError":
            return True
    return False


def check_success(result: dg.ExecuteInProcessResult, log: Path | None, key: str | None) -> None:
    """Raise StepFailed naming the failed step, its cause and where the full log is."""
    from climb_assets.failures import failure_traceback, step_failure

    if result.success:
        return
    step, cause = step_failure(result) or ("run", "failed before any step ran")
    where = f"{step} [{key}]" if key else step
    logs = f"full log: {log}; " if log is not None else ""
    raise StepFailed(
        f"{where}: {cause} ({logs}run {result.run_id} in `dg dev`)",
        failure_traceback(result),
    )


class _BelowErrors(logging.Filter):
    """Drops error records: a failed step's stack, told by `climb` in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


class _NotForDisplay(logging.Filter):
    """Drops the records `ConsoleProgress` shows, so --verbose does not print them twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not is_for_display(record)


def climb_console_logger(display: ConsoleProgress) -> dg.LoggerDefinition:
    """Dagster's console logger, without failures' stacks unless show_errors, and with the
    steps' progress lines and notices handed to `display` whatever log_level is."""

    def make(init_context: dg.InitLoggerContext) -> logging.Logger:
        config = init_context.logger_config
        console = dg.build_init_logger_context(
            logger_config={"log_level": config["log_level"].upper(), "name": "dagster"}
        )
        logger = dg.colored_console_logger.logger_fn(console)
        for handler in logger.handlers:  # still at log_level: INFO lines other than these stay out
            handler.addFilter(_NotForDisplay())
            if not config["show_errors"]:
                handler.addFilter(_BelowErrors())
        logger.setLevel(min(logger.level, logging.INFO))  # progress lines are INFO records
        logger.addHandler(display)
        return logger

    return dg.LoggerDefinition(
        make,
        config_schema={
            "log_level": dg.Field(str, default_value="WARNING"),
            "show_errors": dg.Field(bool, default_value=False),
        },
        description="Dagster's console logger, without failures' stacks unless show_errors, "
        "with the steps' progress.",
    )


class _AppendHandler(logging.Handler):
    """Appends each record to a file opened only while writing it: no handle outlives a run."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.DEBUG)
        self.path = path
        self.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(self.format(record) + "\n")
        except OSError:  # a full disk must not bury the step's own error under this one
            pass


@dg.logger({"path": dg.Field(str)}, description="Every Dagster record of the run, to a file.")
def climb_file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("climb.file", logging.DEBUG)
    logger.addHandler(_AppendHandler(Path(init_context.logger_config["path"])))
    return logger
