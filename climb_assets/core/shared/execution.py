"""Where the work inside one step runs: on this machine (`local`: in worker processes at once,
or one item after another in this process), or as Ray tasks on this machine or a cluster
(`ray`).

Asset code calls `map_tasks` and gets results in the order of its items whichever backend ran
them, so `climb run`, the UI and the daemon all use the configured backend. This module holds the
local backend; the Ray one is `core.shared.ray_backend`, imported only when the `ray` backend
is chosen (Ray is an optional extra).
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from climb_assets.settings import ExecutionSettings, Settings

Item = TypeVar("Item")
Result = TypeVar("Result")


class ExecutionError(RuntimeError):
    """The configured execution cannot work; the message names the setting to change."""


@dataclass(frozen=True)
class TaskResources:
    """What one task reserves on the cluster, and the settings that asked for it."""

    cpus: int
    gpus: float
    cpus_key: str
    gpus_key: str


@dataclass(frozen=True)
class TaskFailure:
    """An item whose task raised, or whose worker was lost more often than Ray retries."""

    index: int
    error: BaseException


class TasksFailed(RuntimeError):
    """Some items failed; every other item finished (and checkpointed what it writes)."""

    def __init__(self, failures: list[TaskFailure], total: int) -> None:
        self.failures = failures
        first = failures[0].error
        super().__init__(
            f"{len(failures)} of {total} tasks failed (first: item {failures[0].index}: "
            f"{type(first).__name__}: {str(first).strip().splitlines()[-1][:300]})"
        )


def worker_identity() -> dict[str, Any]:
    """The process a task ran in, for metadata and for telling a retried task apart; inside
    Ray also its node id (hostnames repeat when several nodes share a machine or a pod name)."""
    identity: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    ray = sys.modules.get("ray")  # never import it here: the local backend runs without Ray
    if ray is not None and ray.is_initialized():
        identity["node"] = ray.get_runtime_context().get_node_id()
    return identity


def set_torch_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads: with more threads than reserved cores they spin and
    slow everything that shares the machine."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_pinned(fn: Callable[[Item], Result], threads: int | None, item: Item) -> Result:
    set_torch_threads(threads)
    with _worker_state:
        _worker_state.busy = True
    try:
        return fn(item)
    finally:
        with _worker_state:
            _worker_state.busy = False
            if _worker_state.orphaned:  # nobody will read the result; fn checkpointed it
                os._exit(0)


class _WorkerState:
    """Whether this worker process is running an item, and whether its parent has died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.busy = False
        self.orphaned = False

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *_: object) -> None:
        self._lock.release()


_worker_state = _WorkerState()


def _start_parent_watch() -> None:
    """Worker initializer: exit when the parent process dies (a `kill -9` of `climb`), at once
    when idle, else after the current item. Otherwise kept workers would wait for work forever."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        with _worker_state:
            _worker_state.orphaned = True
            if not _worker_state.busy:
                os._exit(0)

    threading.Thread(target=watch, name="climb-parent-watch", daemon=True).start()


def map_tasks(
    fn: Callable[[Item], Result],
    items: Sequence[Item],
    execution: ExecutionSettings,
    resources: TaskResources,
    on_result: Callable[[int, Result], None] | None = None,
    local_threads: int | None = None,
    local_workers: int = 1,
) -> list[Result]:
    """fn(item) for every item, results in item order (never completion order).

    local: `local_workers` processes at once (just this one when 1), each with `local_threads`
    torch threads. ray: one task per item with `resources`, torch threads = its CPUs, retried
    when its worker is lost. Every item runs even when one fails, so what the others write is
    kept; TasksFailed is raised at the end. `on_result(index, result)` is called as each item
    finishes (progress logs). `fn` and the items must pickle unless they run in this process.
    """
    if execution.backend == "ray":
        from climb_assets.core.shared.ray_backend import map_ray

        return map_ray(fn, items, execution, resources, on_result)
    if local_workers > 1 and len(items) > 1:
        return _map_processes(fn, items, local_workers, local_threads, on_result)
    results: list[Result] = []
    failures: list[TaskFailure] = []
    for index, item in enumerate(items):
        try:
            result = run_pinned(fn, local_threads, item)
        except Exception as err:  # noqa: BLE001 - reported together at the end
            failures.append(TaskFailure(index, err))
            continue
        results.append(result)
        if on_result:
            on_result(index, result)
    if failures:
        raise TasksFailed(failures, len(items))
    return results


def map_proxy_tasks(
    fn: Callable[[Item], Result],
    items: Sequence[Item],
    settings: Settings,
    work_dir: Path,
    on_done: Callable[[int, Result, int], None],
) -> list[Result]:
    """`map_tasks` for proxy-sized models (the search's proxies, the evaluation's models): each
    reserves execution.cpus_per_proxy / gpus_per_proxy and trains with proxy.cpu_threads torch
    threads, the local backend running `local_worker_count` of them at once. On Ray every node
    must see `work_dir`, where each task writes its checkpoint. `on_done(index, result,
    finished)` is called as each item finishes, `finished` counting them in completion order."""
    from climb_assets.core.shared.precision import default_device

    execution = settings.execution
    if items and execution.backend == "ray":
        work_dir.mkdir(parents=True, exist_ok=True)
        from climb_assets.core.shared.ray_backend import check_shared_folder

        check_shared_folder(work_dir, execution)
    finished = 0

    def counted(index: int, result: Result) -> None:
        nonlocal finished
        finished += 1
        on_done(index, result, finished)

    threads = settings.proxy.cpu_threads
    return map_tasks(
        fn,
        items,
        execution,
        TaskResources(
            execution.cpus_per_proxy,
            execution.gpus_per_proxy,
            "execution.cpus_per_proxy",
            "execution.gpus_per_proxy",
        ),
        on_result=counted,
        local_threads=threads,
        local_workers=local_worker_count(execution, threads, default_device()),
    )


def map_shard_tasks(
    fn: Callable[[Item], Result],
    items: Sequence[Item],
    execution: ExecutionSettings,
    output_dir: Path,
) -> list[Result]:
    """`map_tasks` for a corpus-wide stage cut into one item per shard. On Ray each task
    reserves execution.cpus_per_shard_task CPUs and every node must see `output_dir`: tasks read
    the shards' files there and write their own. The local backend runs the items one after
    another in this process, so its memory stays that of one batch (execution.batch_docs)."""
    if items and execution.backend == "ray":
        from climb_assets.core.shared.ray_backend import check_shared_folder

        check_shared_folder(output_dir, execution)
    key = "execution.cpus_per_shard_task"
    # no GPU asked for, so the GPU key is never named in an error
    resources = TaskResources(execution.cpus_per_shard_task, 0, key, key)
    return map_tasks(fn, items, execution, resources)


def _map_processes(
    fn: Callable[[Item], Result],
    items: Sequence[Item],
    workers: int,
    threads: int | None,
    on_result: Callable[[int, Result], None] | None,
) -> list[Result]:
    """The local backend's worker processes, kept for the next call when every item succeeded
    (see `_worker_pool`)."""
    results: dict[int, Result] = {}
    failures: list[TaskFailure] = []
    executor = _worker_pool(workers)
    try:
        futures = {
            executor.submit(run_pinned, fn, threads, item): index
            for index, item in enumerate(items)
        }
        for future in as_completed(futures):
            index = futures[future]
            try:
                results[index] = future.result()
            except Exception as err:  # noqa: BLE001 - BrokenProcessPool for a killed worker too
                failures.append(TaskFailure(index, err))
                continue
            if on_result:
                on_result(index, results[index])
    finally:
        # An interrupted step (Ctrl-C, a Dagster termination) must not leave workers training;
        # after a failure (a killed worker breaks the pool) the next call starts afresh.
        if failures or len(results) < len(items):
            release_worker_pool(terminate=True)
    if failures:
        raise TasksFailed(sorted(failures, key=lambda f: f.index), len(items))
    return [results[i] for i in range(len(items))]


# (owner pid, worker count, pool): the local backend's worker processes, kept between calls in
# this process, since spawning them and importing torch costs seconds each time (three times in
# a `climb run`, once per iteration). A forked child never uses its parent's pool.
_pool: tuple[int, int, ProcessPoolExecutor] | None = None


def _worker_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` worker processes, the kept ones when the count is unchanged. Spawned, not
    forked: a forked child inherits torch's thread pools and any lock a thread of the parent
    held (Dagster's, gRPC's)."""
    global _pool
    if _pool is not None and (
        _pool[:2] != (os.getpid(), workers) or getattr(_pool[2], "_broken", False)
    ):
        release_worker_pool()
    if _pool is None:
        context = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_parent_watch)
        _pool = (os.getpid(), workers, executor)
    return _pool[2]


def release_worker_pool(terminate: bool = False) -> None:
    """Shut the kept worker processes down (`terminate`: without waiting for their work)."""
    global _pool
    if _pool is None:
        return
    owner, _, executor = _pool
    _pool = None
    if owner != os.getpid():
        return
    if terminate:
        for process in list((getattr(executor, "_processes", None) or {}).values()):
            if process.is_alive():
                process.terminate()
    executor.shutdown(wait=True, cancel_futures=True)


# At exit, before multiprocessing joins this process's children: a process started by
# multiprocessing (a step of Dagster's multiprocess executor) joins every non-daemon child
# before its atexit handlers run, and kept workers, their parent alive, would never end. Above
# the queues' own finalizers (priority 10), which stop their feeder threads: after those, the
# pool's stop sentinels would never reach the workers.
multiprocessing.util.Finalize(None, release_worker_pool, exitpriority=100)
atexit.register(release_worker_pool)


def local_worker_count(execution: ExecutionSettings, threads: int | None, device: str) -> int:
    """Processes the local backend trains proxies in: execution.local_workers, or by default as
    many as the CPUs hold at `threads` each. One on a GPU: several processes would each hold a
    CUDA context and contend for the same device (Ray with fractional GPUs packs them well)."""
    if execution.local_workers is not None:
        return execution.local_workers
    if device != "cpu" or threads is None:
        return 1
    return max(1, available_cpus() // threads)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
