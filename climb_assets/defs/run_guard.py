"""Runs that died, and waiting for a concurrency slot, in the project's Dagster instance.

A `climb` process killed mid-run (kill -9, a lost machine) leaves its run STARTED and keeps
its slot of the `gpu` pool, and Dagster would wait for that slot forever. Every run `climb`
launches is tagged with its owner process; on the next start, runs whose owner is gone are
marked failed and their slots freed. A slot held by a live run is waited for visibly, and the
wait ends on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import dagster as dg

from climb_assets.core.shared.run_owner import Owner, sigterm_interrupts

OWNER_PID_TAG = "climb/owner_pid"
OWNER_HOST_TAG = "climb/owner_host"
OWNER_STARTED_TAG = "climb/owner_started"

UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def owner_tags(owner: Owner) -> dict[str, str]:
    return {
        OWNER_PID_TAG: str(owner.pid),
        OWNER_HOST_TAG: owner.host,
        OWNER_STARTED_TAG: repr(owner.started),
    }


def run_owner(run: dg.DagsterRun) -> Owner | None:
    """The owner a run was tagged with, or None for runs `climb` did not launch."""
    tags = run.tags
    try:
        return Owner(int(tags[OWNER_PID_TAG]), tags[OWNER_HOST_TAG], float(tags[OWNER_STARTED_TAG]))
    except (KeyError, ValueError):
        return None


def recover_dead_runs(
    instance: dg.DagsterInstance, echo: Callable[[str], None] = print
) -> list[str]:
    """Mark every unfinished run whose owner process is gone as failed and free its concurrency
    slots; also free slots still held by finished runs. Returns the recovered run ids."""
    recovered = []
    for run in instance.get_runs(dg.RunsFilter(statuses=UNFINISHED)):
        owner = run_owner(run)
        if owner is None or owner.is_alive():
            continue
        instance.report_run_failed(
            run, message=f"the climb process that ran this run ({owner.describe()}) is gone"
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        recovered.append(run.run_id)
        echo(
            f"recovered run {run.run_id} ({_run_label(run)}): its process ({owner.describe()}) "
            "died; marked failed, its concurrency slots freed, its work resumes below"
        )
    _free_slots_of_finished_runs(instance)
    return recovered


def _free_slots_of_finished_runs(instance: dg.DagsterInstance) -> None:
    storage = instance.event_log_storage
    for run_id in storage.get_concurrency_run_ids():
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)


def _run_label(run: dg.DagsterRun) -> str:
    partition = run.tags.get("dagster/partition")
    keys = sorted(k.to_user_string() for k in run.asset_selection or [])
    return ", ".join(keys) + (f" [{partition}]" if partition else "")


def pool_holders(instance: dg.DagsterInstance, pool: str) -> list[str] | None:
    """Run ids holding every slot of `pool`, or None when a slot is free (or the pool has none
    configured yet)."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    if info.slot_count == 0 or info.active_slot_count < info.slot_count:
        return None
    return sorted(info.active_run_ids)


def wait_for_pools(
    instance: dg.DagsterInstance,
    pools: set[str],
    echo: Callable[[str], None] = print,
    poll_s: float = 2.0,
) -> None:
    """Return once every pool in `pools` has a free slot, saying what it waits for."""
    said: set[tuple[str, tuple[str, ...]]] = set()
    with sigterm_interrupts():
        while True:
            busy = {p: h for p in sorted(pools) if (h := pool_holders(instance, p)) is not None}
            if not busy:
                return
            for pool, holders in busy.items():
                if (pool, tuple(holders)) not in said:
                    said.add((pool, tuple(holders)))
                    echo(
                        f"waiting for a slot of the {pool!r} pool, held by "
                        f"{_describe_runs(instance, holders)} (Ctrl-C to stop)"
                    )
            time.sleep(poll_s)


def _describe_runs(instance: dg.DagsterInstance, run_ids: list[str]) -> str:
    parts = []
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        owner = run_owner(run) if run else None
        details = [d for d in (run and _run_label(run), owner and owner.describe()) if d]
        if owner is None:  # launched by `dagster dev` (or an older climb): climb cannot tell
            details.append("not started by climb: if it is dead, free its slots in the UI")
        parts.append(f"run {run_id}" + (f" ({', '.join(details)})" if details else ""))
    return "; ".join(parts)
