"""The `execution` settings and the errors of a Ray backend that cannot work, without a cluster.

The tests that start Ray live in test_ray_execution.py; the connection errors here are raised
before Ray starts anything."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import yaml

from climb_assets.core.shared.execution import ExecutionError, TaskResources, map_tasks
from climb_assets.core.shared.ray_backend import ensure_ray
from climb_assets.settings import (
    AutomationSettings,
    ExecutionSettings,
    Settings,
    SettingsError,
    load_settings,
)

PROXY = TaskResources(1, 0, "execution.cpus_per_proxy", "execution.gpus_per_proxy")


def settings_error(tmp_path: Path, execution: dict) -> str:
    path = tmp_path / "climb.yaml"
    path.write_text(yaml.safe_dump({"execution": execution}))
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    return str(err.value)


def test_local_is_the_default_and_ray_is_read_from_yaml(tmp_path: Path) -> None:
    assert Settings().execution.backend == "local"
    path = tmp_path / "climb.yaml"
    path.write_text(
        yaml.safe_dump(
            {"execution": {"backend": "ray", "ray_address": "auto", "gpus_per_proxy": 0.25}}
        )
    )
    execution = load_settings(path).execution
    assert (execution.backend, execution.ray_address, execution.gpus_per_proxy) == (
        "ray",
        "auto",
        0.25,
    )


@pytest.mark.parametrize(
    ("execution", "named"),
    [
        ({"backend": "spark"}, "execution.backend"),
        ({"cpus_per_proxy": 0}, "execution.cpus_per_proxy: must be >= 1, got 0"),
        ({"gpus_per_proxy": -1}, "execution.gpus_per_proxy: must be >= 0"),
        ({"gpus_per_proxy": 1.5}, "execution.gpus_per_proxy: must be a fraction <= 1"),
        ({"embed_workers": 0}, "execution.embed_workers: must be >= 1"),
        ({"max_retries": -1}, "execution.max_retries: must be >= 0"),
        ({"workers": 4}, "execution.workers"),
    ],
)
def test_bad_execution_settings_name_their_key(tmp_path: Path, execution: dict, named: str) -> None:
    assert named in settings_error(tmp_path, execution)


def test_where_and_when_work_runs_does_not_change_the_settings_fingerprint() -> None:
    on_ray = Settings(execution=ExecutionSettings(backend="ray", cpus_per_proxy=2))
    assert on_ray.fingerprint() == Settings().fingerprint()
    weekly = Settings(automation=AutomationSettings(search_cron="0 3 * * 0"))
    assert weekly.fingerprint() == Settings().fingerprint()
    assert Settings(seed=7).fingerprint() != Settings().fingerprint()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_unreachable_ray_address_is_a_clear_error(scheme: str) -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.fail("a Ray of another test is still running in this process")
    address = f"{scheme}127.0.0.1:{free_port()}"  # nothing listens there
    unreachable = ExecutionSettings(backend="ray", ray_address=address, connect_timeout_s=2)
    with pytest.raises(ExecutionError, match=r"execution\.ray_address: cannot connect") as err:
        ensure_ray(unreachable)
    assert address in str(err.value)
    with pytest.raises(ExecutionError, match="execution.ray_address"):
        map_tasks(abs, [1], unreachable, PROXY)
    assert not ray.is_initialized()


def test_the_local_backend_runs_every_item_in_order_and_reports_failures_together() -> None:
    from climb_assets.core.shared.execution import TasksFailed

    done: list[int] = []
    assert map_tasks(abs, [-1, 2, -3], ExecutionSettings(), PROXY) == [1, 2, 3]
    with pytest.raises(TasksFailed, match="1 of 3 tasks failed") as err:
        map_tasks(_fails_on_two, [1, 2, 3], ExecutionSettings(), PROXY, lambda i, _: done.append(i))
    assert done == [0, 2] and err.value.failures[0].index == 1


def _fails_on_two(value: int) -> int:
    if value == 2:
        raise ValueError("two")
    return value


@pytest.mark.slow
def test_the_ray_backend_starts_a_local_ray_when_no_address_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.fail("a Ray of another test is still running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        pids = map_tasks(_pid, [0, 1], ExecutionSettings(backend="ray"), PROXY)
        assert ray.is_initialized() and os.getpid() not in pids
    finally:
        ray.shutdown()


def _pid(_: int) -> int:
    return os.getpid()
