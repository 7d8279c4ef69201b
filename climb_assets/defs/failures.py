"""One line per failure: the `climb` command's error line, an asset step's `dg.Failure`, and the
cause of a failed Dagster run, each told in one line that names the file, line or setting.

The full traceback is never lost: a step keeps it in its failure's metadata (the UI shows it
under the short description) and `climb run` writes every Dagster event to a log file.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import ParamSpec, Protocol, TypeVar

import dagster as dg

P = ParamSpec("P")
R = TypeVar("R")

# Errors whose message is meant for the user; anything else also names its type.
USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    LookupError,
    ValueError,
    RuntimeError,
)
USER_ERROR_NAMES = frozenset(cls.__name__ for cls in USER_ERRORS)
MAX_ERROR_CHARS = 600
CAUSE_CHARS = 350  # a step's cause, leaving room on its line for the step, log and run id
# Dagster's wrappers around the exception an asset body raised.
DAGSTER_WRAPPERS = frozenset(
    {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"}
)


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Multi-line text joined with '; ' (blank lines and '^^^' markers dropped), cut at `limit`."""
    lines = [line.strip() for line in text.splitlines()]
    joined = "; ".join(line for line in lines if line and set(line) != {"^"})
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def is_user_error(err: BaseException) -> bool:
    """True for errors whose message is written for the user: climb's own, built-in ones such
    as ValueError, and SQL errors."""
    module = type(err).__module__
    return isinstance(err, USER_ERRORS) or module.startswith("climb_assets") or "duckdb" in module


def error_line(err: BaseException) -> str:
    """An exception as one line, multi-line messages joined (settings errors, YAML included,
    already name their file, line and key)."""
    text = one_line(str(err))
    if is_user_error(err):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text} (run `climb --debug ...` for the traceback)"


def as_failure(err: Exception) -> dg.Failure:
    """`err` as a step failure the UI shows as one line, its traceback kept in the metadata."""
    text = one_line(str(err)) or type(err).__name__
    if not is_user_error(err):
        text = f"{type(err).__name__}: {text}"
    stack = "".join(traceback.format_exception(err))
    return dg.Failure(description=text, metadata={"traceback": dg.MetadataValue.text(stack)})


def one_line_failures(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate an asset body (under `@dg.asset`): what it raises reaches Dagster as a
    `dg.Failure` with a one-line description instead of a Python stack."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except dg.Failure:
            raise
        except Exception as err:
            raise as_failure(err) from None  # the stack is in the failure's metadata

    return wrapper


def step_failure(result: dg.ExecuteInProcessResult) -> tuple[str, str] | None:
    """(step, cause in one line) of the first failed step of a run, or None."""
    for event in result.all_events:
        if event.event_type != dg.DagsterEventType.STEP_FAILURE:
            continue
        data = event.step_failure_data
        user = data.user_failure_data
        if user is not None and user.description:
            return event.step_key or "?", one_line(user.description, CAUSE_CHARS)
        return event.step_key or "?", error_cause(data.error)
    return None


def failure_traceback(result: dg.ExecuteInProcessResult) -> str | None:
    """The full traceback of the first failed step (from its failure's metadata, else its
    error), for `climb --debug`."""
    for event in result.all_events:
        if event.event_type != dg.DagsterEventType.STEP_FAILURE:
            continue
        data = event.step_failure_data
        user = data.user_failure_data
        if user is not None and "traceback" in user.metadata:
            return str(user.metadata["traceback"].value)
        return data.error.to_string() if data.error else None
    return None


class ErrorInfo(Protocol):
    """What `error_cause` reads of Dagster's serialized error (a step failure's `error`)."""

    @property
    def cls_name(self) -> str | None: ...
    @property
    def message(self) -> str: ...
    @property
    def cause(self) -> ErrorInfo | None: ...


def error_cause(error: ErrorInfo | None) -> str:
    """The user's exception inside Dagster's wrappers, as one line: its message, led by its
    type unless it is one of climb's own errors or a built-in one meant for the user."""
    if error is None:
        return "failed (no error recorded)"
    while error.cls_name in DAGSTER_WRAPPERS and error.cause is not None:
        error = error.cause
    name = error.cls_name or "Error"
    head, sep, text = error.message.partition(f"{name}: ")
    text = text if sep and " " not in head.strip() else error.message
    own = head.startswith("climb_assets.") or name in USER_ERROR_NAMES
    text = one_line(text, CAUSE_CHARS) or name
    return text if own else f"{name}: {text}"
