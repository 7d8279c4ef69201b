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

from climb_assets.cli.preflight import (
    check_corpus_fits,
    describe_shard_work,
    preflight,
    text_field_warnings,
)
from climb_assets.core.shared.progress import ConsoleProgress, is_for_display
from climb_assets.core.shared.run_owner import Owner, interrupt_witness
from climb_assets.defs.graph import Stage, stages
from climb_assets.defs.run_guard import owner_tags, recover_dead_runs, wait_for_pools
from climb_assets.defs.shard_state import register_shards
from climb_assets.settings import Settings


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


def shard_is_current(
    instance: dg.DagsterInstance, stage: Stage, shard: str, settings: Settings
) -> bool:
    """True when every asset of a per-shard stage was last materialized (by `climb run`, the UI
    or the daemon) from the same file, settings and code, and its output files still exist."""
    from climb_assets.defs.shard_state import shard_input_fingerprint
    from climb_assets.defs.shard_state import shard_is_current as current

    expected = shard_input_fingerprint(settings, shard)
    return current(instance, settings, shard, expected, stage.assets)


def partition_keys(stage: Stage, shards: list[str], settings: Settings) -> list[str | None]:
    if stage.axis == "shards":
        return list(shards)
    if stage.axis == "iterations":
        from climb_assets.store import iteration_key

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
    unless `debug`, and the steps' progress lines (`climb_assets.core.shared.progress`) at any
    level; `log` gets every record. The instance's event log keeps everything."""
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
    with interrupt_witness() as interrupted:
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
        # Dagster turns Ctrl-C/SIGTERM into a failed run, but may finish the run instead when
        # the signal lands between its checkpoints: stop after it all the same.
        if was_interrupted(result) or interrupted():
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
    from climb_assets.defs.failures import failure_traceback, step_failure

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
