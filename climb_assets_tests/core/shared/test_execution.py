"""The local backend's worker processes: item order, thread pinning, failures, and proxies that
score the same whichever number of processes trained them."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from climb_assets.core.search.pool_writer import build_pool
from climb_assets.core.search.proxy_pool import ProxyPool
from climb_assets.core.search.proxy_training import train_proxy
from climb_assets.core.search.tokenizer import train_bpe
from climb_assets.core.shared.execution import (
    TaskResources,
    TasksFailed,
    available_cpus,
    local_worker_count,
    map_tasks,
    release_worker_pool,
)
from climb_assets.settings import ExecutionSettings, ProxySettings

LOCAL = ExecutionSettings()
RESOURCES = TaskResources(1, 0.0, "execution.cpus_per_proxy", "execution.gpus_per_proxy")


def where_and_threads(delay: float) -> tuple[int, int]:
    time.sleep(delay)
    return os.getpid(), torch.get_num_threads()


def fail_on_two(item: int) -> int:
    if item == 2:
        raise ValueError("planted failure")
    return item * 10


def die_on_one(item: int) -> int:
    if item == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return item


def test_workers_return_results_in_item_order_from_other_processes() -> None:
    # The long first item finishes last: results must still come back in item order.
    delays = [1.5, 0.1, 0.1, 0.1]
    seen: list[int] = []
    results = map_tasks(
        where_and_threads,
        delays,
        LOCAL,
        RESOURCES,
        on_result=lambda index, _: seen.append(index),
        local_threads=1,
        local_workers=2,
    )
    pids = {pid for pid, _ in results}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {threads for _, threads in results} == {1}
    assert sorted(seen) == [0, 1, 2, 3] and seen[-1] == 0


def test_one_worker_runs_in_this_process() -> None:
    results = map_tasks(where_and_threads, [0.0, 0.0], LOCAL, RESOURCES, local_workers=1)
    assert {pid for pid, _ in results} == {os.getpid()}


def test_a_failing_item_is_reported_after_the_others_finish() -> None:
    finished: list[int] = []
    with pytest.raises(TasksFailed) as caught:
        map_tasks(
            fail_on_two,
            [0, 1, 2, 3],
            LOCAL,
            RESOURCES,
            on_result=lambda _, result: finished.append(result),
            local_workers=2,
        )
    assert [f.index for f in caught.value.failures] == [2]
    assert "planted failure" in str(caught.value)
    assert sorted(finished) == [0, 10, 30]


def test_a_killed_worker_fails_the_call_instead_of_hanging() -> None:
    with pytest.raises(TasksFailed) as caught:
        map_tasks(die_on_one, [0, 1, 2, 3], LOCAL, RESOURCES, local_workers=2)
    assert 1 in {f.index for f in caught.value.failures}


def test_worker_processes_are_kept_for_the_next_call_unless_one_failed() -> None:
    """A `climb run` trains each iteration's proxies in the same worker processes; a call that
    lost a worker leaves none behind, and the next call gets fresh ones."""

    def pids() -> set[int]:
        results = map_tasks(where_and_threads, [0.3] * 4, LOCAL, RESOURCES, local_workers=2)
        return {pid for pid, _ in results}

    first = pids()
    assert pids() == first
    with pytest.raises(TasksFailed):
        map_tasks(die_on_one, [0, 1, 2, 3], LOCAL, RESOURCES, local_workers=2)
    after = pids()
    assert len(after) == 2 and not after & first
    release_worker_pool()
    assert not pids() & after


def test_worker_count_follows_the_cpus_and_the_device() -> None:
    assert local_worker_count(ExecutionSettings(local_workers=3), 1, "cpu") == 3
    assert local_worker_count(LOCAL, 1, "cpu") == available_cpus()
    assert local_worker_count(LOCAL, available_cpus() + 1, "cpu") == 1
    assert local_worker_count(LOCAL, None, "cpu") == 1  # torch's default uses every core
    assert local_worker_count(LOCAL, 1, "cuda") == 1


TEXTS = {
    0: [f"the cat number {i} sat on the mat and looked at the dog." for i in range(100)],
    1: [f"a ship of {i} sails crossed the grey sea under the moon." for i in range(100)],
}


class TinyProxy:
    """Trains a tiny proxy on the pool at `root` and returns its loss curve (picklable)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, share: float) -> list[tuple[int, float]]:
        settings = ProxySettings(
            d_model=32, n_layers=1, n_heads=2, seq_len=32, batch_size=8, tokens_per_proxy=8192
        )
        run = train_proxy(ProxyPool.open(self.root), {0: share, 1: 1 - share}, settings, seed=1)
        return run.loss_curve


def test_proxies_score_the_same_in_one_process_or_in_two(tmp_path: Path) -> None:
    tokenizer = train_bpe([t for texts in TEXTS.values() for t in texts], vocab_size=300)
    build_pool(TEXTS, tokenizer, tmp_path / "pool")
    train = TinyProxy(tmp_path / "pool")
    shares = [0.2, 0.5, 0.8]
    alone = map_tasks(train, shares, LOCAL, RESOURCES, local_threads=1, local_workers=1)
    spread = map_tasks(train, shares, LOCAL, RESOURCES, local_threads=1, local_workers=2)
    assert spread == alone
    assert alone[0] != alone[2]  # the mixtures differ, so equal curves mean something


class MarkWhenDone:
    """Sleeps, then writes a file named after the item and this process (picklable)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, seconds: float) -> int:
        time.sleep(seconds)
        (self.folder / f"{seconds}-{os.getpid()}").write_text("done")
        return os.getpid()


def map_in_a_step_process() -> None:
    """What a step of Dagster's multiprocess executor does: map, keep the workers, return."""
    map_tasks(where_and_threads, [0.0, 0.01], LOCAL, RESOURCES, local_workers=2)


def test_a_multiprocessing_child_with_kept_workers_exits() -> None:
    """A process started by multiprocessing joins its children before atexit handlers run; the
    kept workers must be shut down first, or the step process never ends (a hung Dagster run)."""
    step = multiprocessing.get_context("spawn").Process(target=map_in_a_step_process)
    step.start()
    step.join(timeout=60)
    hung = step.is_alive()
    if hung:
        for child in _children(step.pid):
            os.kill(child, signal.SIGKILL)
        step.kill()
    assert not hung and step.exitcode == 0


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


_KILLED_PARENT = """
import os, sys, threading, time
from pathlib import Path
from climb_assets.core.shared.execution import map_tasks
from climb_assets_tests.core.shared.test_execution import LOCAL, RESOURCES, MarkWhenDone

if __name__ == "__main__":  # spawned workers import this file again
    folder = Path(sys.argv[1])
    mark = MarkWhenDone(folder)
    pids = map_tasks(mark, [0.0, 0.01], LOCAL, RESOURCES, local_workers=2)  # kept, idle
    (folder / "pids").write_text(" ".join(map(str, set(pids))))
    if sys.argv[2] == "busy":
        args = (mark, [2.0, 2.1], LOCAL, RESOURCES, None, None, 2)
        threading.Thread(target=map_tasks, args=args, daemon=True).start()
        time.sleep(1.0)
    os.kill(os.getpid(), 9)
"""


@pytest.mark.parametrize("when", ["idle", "busy"])
def test_workers_exit_when_their_parent_is_killed(tmp_path: Path, when: str) -> None:
    """A `kill -9` of climb leaves no worker behind: an idle one exits at once, a busy one after
    its current item (whose checkpoint it writes)."""
    script = tmp_path / "parent.py"
    script.write_text(_KILLED_PARENT)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    subprocess.run([sys.executable, str(script), str(tmp_path), when], env=env, timeout=120)
    workers = [int(pid) for pid in (tmp_path / "pids").read_text().split()]
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)
    finished = {p.name.split("-")[0] for p in tmp_path.glob("2.*-*")}
    if when == "busy":  # the first item was running when the parent died (the second may wait)
        assert "2.0" in finished
    else:
        assert not finished


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead but not reaped yet (its parent, the killed script, is gone: init reaps)
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))
