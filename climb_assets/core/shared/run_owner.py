"""Which process owns a run, whether it is still alive, one `climb run` per output folder at a
time, and SIGTERM handled like Ctrl-C.

A run records its owner as (pid, hostname, process start time): a pid alone is not enough,
since the OS reuses pids, so a live process with the run's pid but another start time is not
the owner. The project lock is an flock, which the OS releases when its holder dies (even by
kill -9), so a crashed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

# Start times come from /proc in clock ticks (10 ms): equal within this means the same process.
START_TIME_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class Owner:
    pid: int
    host: str
    started: float  # the process's start time, seconds since the epoch

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(pid, socket.gethostname(), psutil.Process(pid).create_time())

    @classmethod
    def of_pid(cls, pid: int) -> Owner:
        return cls(pid, socket.gethostname(), psutil.Process(pid).create_time())

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when}"

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def is_alive(self) -> bool:
        """False only when this host can tell the owner is gone (no such pid, a pid reused by a
        later process, or a zombie); an owner on another host is assumed alive."""
        if not self.on_this_host():
            return True
        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            return abs(process.create_time() - self.started) <= START_TIME_TOLERANCE_S
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return False


class ProjectBusyError(RuntimeError):
    """Another `climb run` holds the project's lock."""


@contextlib.contextmanager
def project_lock(path: Path, what: str = "climb run") -> Iterator[Owner]:
    """Hold an exclusive flock on `path` for the block; raise ProjectBusyError naming the holder
    if another process has it. The holder's identity is written into the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProjectBusyError(_busy_message(path, what)) from None
        owner = Owner.current()
        os.ftruncate(fd, 0)
        record = {"pid": owner.pid, "host": owner.host, "started": owner.started, "what": what}
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        yield owner
    finally:
        os.close(fd)  # closing releases the flock


def _busy_message(path: Path, what: str) -> str:
    try:
        record = json.loads(path.read_text())
        holder = Owner(int(record["pid"]), str(record["host"]), float(record["started"]))
        who = f"{record.get('what', 'climb run')} ({holder.describe()})"
    except (OSError, ValueError, KeyError, TypeError):
        who = "another climb process"  # it holds the lock but has not written its name yet
    return (
        f"{who} is already running on this output folder ({path.parent}); "
        f"wait for it to finish or stop it, then retry {what}"
    )


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block, like Ctrl-C, so a wait stops cleanly."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupt_witness() -> Iterator[Callable[[], bool]]:
    """Yield a check that says whether SIGINT or SIGTERM arrived since the last check, whatever
    Python handler was installed then.

    A handler that raises (Dagster's, during a run) can raise inside a garbage collector's
    callback, where Python prints "Exception ignored in ..." and drops it; the interpreter's
    wakeup fd still receives the signal's number. Inside the block such dropped interrupts are
    not printed: the check reports them. Outside the main thread the check says False."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    previous_hook = sys.unraisablehook

    def quiet_interrupts(unraisable: sys.UnraisableHookArgs) -> None:
        if not isinstance(unraisable.exc_value, Exception | None):  # an interrupt, dropped
            return
        previous_hook(unraisable)

    sys.unraisablehook = quiet_interrupts

    def arrived() -> bool:
        try:
            numbers = os.read(read_end, 1024)
        except BlockingIOError:
            return False
        return any(n in (signal.SIGINT, signal.SIGTERM) for n in numbers)

    try:
        yield arrived
    finally:
        sys.unraisablehook = previous_hook
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)
