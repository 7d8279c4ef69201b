"""Command-line values checked by the settings' own pydantic models, so an option and the YAML
key it stands for accept the same range; a value out of range is one line naming the option."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from climb_assets.settings import BOUNDS

Model = TypeVar("Model", bound=BaseModel)


class OptionError(ValueError):
    """Command-line values their settings model refuses; one line naming each option."""


def settings_from_args(
    model: type[Model],
    args: argparse.Namespace,
    options: Mapping[str, str],
    hints: Mapping[str, str] | None = None,
) -> Model:
    """`model` with each field of `options` (field -> option) set from `args`; a refused value
    raises OptionError '--option VALUE: must be RULE', followed by `hints[option]` if given."""
    values = {field: getattr(args, option_dest(option)) for field, option in options.items()}
    try:
        return model(**values)
    except ValidationError as err:
        problems = [_problem(error, options, hints or {}) for error in err.errors()]
        raise OptionError("; ".join(problems)) from None


def option_dest(option: str) -> str:
    """The argparse attribute of an option: '--top-k' -> 'top_k'; a '--no-X' switch sets X."""
    return option.removeprefix("--").removeprefix("no-").replace("-", "_")


def _problem(error: ErrorDetails, options: Mapping[str, str], hints: Mapping[str, str]) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    option = options.get(field, field)
    line = f"{option} {error['input']}: {_rule(error)}"
    return f"{line} ({hints[option]})" if option in hints else line


def _rule(error: ErrorDetails) -> str:
    """What the value must be, in the words of the settings' own errors: 'must be >= 2'."""
    if error["type"] in BOUNDS:
        symbol, bound = BOUNDS[error["type"]]
        return f"must be {symbol} {error['ctx'][bound]:g}"
    message = error["msg"]
    should = "Input should be "
    return "must be " + message.removeprefix(should) if message.startswith(should) else message
