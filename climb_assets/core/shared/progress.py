"""Progress of long steps: an iteration's proxies, the final race, the evaluation's models.

A step logs one fixed-format line as it starts and one per finished model, e.g.
"iter-001: proxy 12/24 done, ~3m10s left", to its Dagster step log (the UI shows it as is).
`climb`'s console logger hands its records to `ConsoleProgress`, which draws those lines as a
bar per task when the stream is a terminal and prints them as they are otherwise. Records
logged with `notice` (an estimate before long work) are printed whatever the console's level.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

# A logging `extra` key: the record is a line the console prints at any log level.
NOTICE = "climb_notice"

_LINE = re.compile(
    r"^(?P<task>.+): (?P<unit>[a-z]+) (?P<done>\d+)/(?P<total>\d+) done"
    r"(?:, ~(?P<left>\S+) left)?$"
)


def format_left(seconds: float) -> str:
    """A short duration: '45s', '3m10s', '1h05m'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class Progress:
    """Counts `total` units of `task`; the time left is the mean time per finished unit (wall
    clock since the start, so parallel workers count) times the units remaining."""

    task: str
    unit: str
    total: int
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def line(self, finished: int) -> str:
        text = f"{self.task}: {self.unit} {finished}/{self.total} done"
        if 0 < finished < self.total:
            left = (self.clock() - self.started) / finished * (self.total - finished)
            text += f", ~{format_left(left)} left"
        return text


@dataclass(frozen=True)
class ProgressLine:
    task: str
    unit: str
    done: int
    total: int
    left: str | None

    @classmethod
    def parse(cls, text: str) -> ProgressLine | None:
        """The line `Progress.line` wrote, or None for any other text."""
        found = _LINE.match(text)
        if found is None:
            return None
        done, total = int(found["done"]), int(found["total"])
        return cls(found["task"], found["unit"], done, total, found["left"])


def notice(log: logging.Logger, line: str) -> None:
    """Log `line` at INFO, shown on `climb`'s console even when it shows only warnings."""
    log.info(line, extra={NOTICE: True})


def original_message(record: logging.LogRecord) -> str:
    """What the step logged, without the run and step Dagster puts in front of it."""
    meta: Any = getattr(record, "dagster_meta", None)
    if isinstance(meta, dict) and isinstance(meta.get("orig_message"), str):
        return meta["orig_message"]
    return record.getMessage()


def is_for_display(record: logging.LogRecord) -> bool:
    """True for the records `ConsoleProgress` shows (other console handlers skip them)."""
    if getattr(record, NOTICE, False):
        return True
    return ProgressLine.parse(original_message(record)) is not None


class ConsoleProgress(logging.Handler):
    """Shows progress lines and notices on `stream`: on a terminal a rich bar per task (removed
    once every task on screen is done, or by `close`), else each line as it comes."""

    def __init__(self, stream: IO[str], terminal: bool | None = None) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.terminal = stream.isatty() if terminal is None else terminal
        self._bar: Any = None  # a rich.progress.Progress while a bar is on screen
        self._tasks: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = original_message(record)
            line = ProgressLine.parse(text)
            if line is not None and self.terminal:
                self._draw(line)
            elif line is not None or getattr(record, NOTICE, False):
                self._print(text)
        except Exception:  # noqa: BLE001 - progress must never fail a step
            self.handleError(record)

    def _print(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def _draw(self, line: ProgressLine) -> None:
        if self._bar is None:
            self._bar = _new_bar(self.stream)
            self._bar.start()
        if line.task not in self._tasks:
            self._tasks[line.task] = self._bar.add_task(line.task, total=line.total, left="")
        left = f"~{line.left} left" if line.left else ""
        self._bar.update(self._tasks[line.task], completed=line.done, total=line.total, left=left)
        if all(task.finished for task in self._bar.tasks):
            self.stop()

    def stop(self) -> None:
        """Take the bar off the screen (left there, last state, when a step fails midway)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar, self._tasks = None, {}

    def close(self) -> None:
        self.stop()
        super().close()


def _new_bar(stream: IO[str]) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[left]}"),
        console=Console(file=stream),
    )
