"""The `ray` execution backend: Ray tasks (and kept actor pools) on this machine or a cluster,
joining the configured cluster, and checking before any task that the cluster can run what is
asked (resources a node has, a folder every node sees).

`core.shared.execution` routes here when execution.backend is `ray`; Ray itself is imported
only inside these functions, since it is an optional extra.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from climb_assets.core.shared.atomic import atomic_path
from climb_assets.core.shared.execution import (
    ExecutionError,
    Item,
    Result,
    TaskFailure,
    TaskResources,
    TasksFailed,
    run_pinned,
)

if TYPE_CHECKING:
    from climb_assets.settings import ExecutionSettings


PROBE_PREFIX = ".ray-probe-"


def map_ray(
    fn: Callable[[Item], Result],
    items: Sequence[Item],
    execution: ExecutionSettings,
    resources: TaskResources,
    on_result: Callable[[int, Result], None] | None,
) -> list[Result]:
    import ray

    ensure_ray(execution)
    check_resources(resources)
    release_actor_pools()  # embedding actors kept from earlier shards would hold their CPUs
    remote = ray.remote(run_pinned).options(
        num_cpus=resources.cpus,
        num_gpus=resources.gpus,
        max_retries=execution.max_retries,
        retry_exceptions=False,  # a bug fails the same way again; only lost workers are retried
    )
    refs = [remote.remote(fn, resources.cpus, item) for item in items]
    index_of = {ref: i for i, ref in enumerate(refs)}
    results: dict[int, Result] = {}
    failures: list[TaskFailure] = []
    waiting = list(refs)
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=1)
        index = index_of[ready[0]]
        try:
            results[index] = ray.get(ready[0])
        except Exception as err:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, ...
            failures.append(TaskFailure(index, err))
            continue
        if on_result:
            on_result(index, results[index])
    if failures:
        raise TasksFailed(sorted(failures, key=lambda f: f.index), len(items))
    return [results[i] for i in range(len(items))]


def ray_address(execution: ExecutionSettings) -> str | None:
    """The cluster to join: the setting, else RAY_ADDRESS, else None (start one here)."""
    return execution.ray_address or os.environ.get("RAY_ADDRESS") or None


def ensure_ray(execution: ExecutionSettings) -> None:
    """Join the configured Ray cluster, or start a local one inside this process. A Ray already
    initialized in this process (a test's, an earlier step's) is used as it is."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = ray_address(execution)
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            _join_cluster(address, execution.connect_timeout_s)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as err:
        where = repr(address) if address else "a local Ray"
        raise ExecutionError(
            f"execution.ray_address: cannot connect to {where} ({_first_line(err)}); check "
            "the address and that the cluster is up, or unset it to start Ray on this machine"
        ) from err


def _join_cluster(address: str, timeout_s: float) -> None:
    import ray

    if address.startswith("ray://"):
        host_port = address.removeprefix("ray://")
        _check_reachable(host_port, timeout_s)
    elif address != "auto":
        _check_reachable(address, timeout_s)
    ray.init(address=address, log_to_driver=False)


def _check_reachable(host_port: str, timeout_s: float) -> None:
    """Fail fast on a port nobody listens on (Ray itself retries for minutes)."""
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {host_port!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(f"nothing answers at {host}:{port}: {err}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def check_resources(resources: TaskResources) -> None:
    """Fail now when no node could ever run one task: Ray would queue it forever."""
    import ray

    total = ray.cluster_resources()
    for key, wanted, kind in (
        (resources.gpus_key, resources.gpus, "GPU"),
        (resources.cpus_key, resources.cpus, "CPU"),
    ):
        largest = max((node.get(kind, 0.0) for node in _alive_node_resources()), default=0.0)
        if wanted > largest:
            raise ExecutionError(
                f"{key}: each task asks for {wanted:g} {kind}, but no node of the Ray cluster "
                f"has that many (largest node: {largest:g}, cluster total: "
                f"{total.get(kind, 0.0):g}); lower {key} or add nodes with {kind}s"
            )


def _alive_node_resources() -> list[dict[str, float]]:
    import ray

    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def check_shared_folder(folder: Path, execution: ExecutionSettings) -> None:
    """Every alive Ray node must see `folder` (the output folder): workers read the proxy pool
    from it and write their checkpoints to it. A probe file written here is read on each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ensure_ray(execution)
    token = secrets.token_hex(8)
    probe = Path(folder) / f"{PROBE_PREFIX}{token}"
    with atomic_path(probe) as tmp:
        tmp.write_text(token)
    try:
        reader = ray.remote(_read_probe)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        refs = [
            reader.options(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            ).remote(str(probe))
            for node in nodes
        ]
        for node, (host, seen) in zip(nodes, ray.get(refs), strict=True):
            if seen != token:
                raise ExecutionError(
                    f"output_dir: {folder} is not visible from Ray node {host} "
                    f"({node['NodeManagerAddress']}); put output_dir on a filesystem every node "
                    "mounts at the same path (NFS, a shared volume)"
                )
    finally:
        probe.unlink(missing_ok=True)


def _read_probe(path: str) -> tuple[str, str | None]:
    try:
        return socket.gethostname(), Path(path).read_text()
    except OSError:
        return socket.gethostname(), None


# Actor pools kept per Ray session, so `climb run` loads each worker's model once for all shards.
_ACTOR_POOLS: dict[tuple, list[Any]] = {}


def map_on_actors(
    actor_class: type,
    init_args: tuple,
    method: str,
    items: Sequence[Item],
    execution: ExecutionSettings,
    resources: TaskResources,
    workers: int,
) -> list[Any]:
    """actor.method(item) for every item on `workers` Ray actors of `actor_class(*init_args)`
    (each loads its model once and keeps it), results in item order. An actor whose process is
    lost is restarted and its call retried, up to execution.max_retries times."""
    import ray
    from ray.util import ActorPool

    ensure_ray(execution)
    check_resources(resources)
    key = (
        ray.get_runtime_context().get_job_id(),
        actor_class.__qualname__,
        init_args,
        resources,
        workers,
        execution.max_retries,
    )
    if key not in _ACTOR_POOLS:
        release_actor_pools()  # idle actors of another setting would hold their CPUs forever
        remote = ray.remote(actor_class).options(
            num_cpus=resources.cpus,
            num_gpus=resources.gpus,
            max_restarts=execution.max_retries,
            max_task_retries=execution.max_retries,
        )
        _ACTOR_POOLS[key] = [remote.remote(*init_args) for _ in range(workers)]
    pool = ActorPool(_ACTOR_POOLS[key])
    try:
        return list(pool.map(lambda actor, item: getattr(actor, method).remote(item), items))
    except Exception as err:  # noqa: BLE001 - RayTaskError, RayActorError, ...
        release_actor_pools()  # an actor in an unknown state is not reused
        raise TasksFailed([TaskFailure(-1, err)], len(items)) from err


def release_actor_pools() -> None:
    """End the kept actors, giving their CPUs and GPUs back to tasks and other actors."""
    import ray

    while _ACTOR_POOLS:
        _, actors = _ACTOR_POOLS.popitem()
        for actor in actors:
            with contextlib.suppress(Exception):  # gone with an earlier Ray session already
                ray.kill(actor)
