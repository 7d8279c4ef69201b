"""The settings reference table of the README, generated from the settings model itself."""

from __future__ import annotations

from typing import Any, get_args

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from climb_assets.settings import Settings, TargetSettings

_SYMBOLS = ((at.Ge, "ge", ">="), (at.Gt, "gt", ">"), (at.Le, "le", "<="), (at.Lt, "lt", "<"))


def _bounds(metadata: list[Any]) -> list[str]:
    return [
        f"{symbol} {getattr(item, name)}"
        for item in metadata
        for kind, name, symbol in _SYMBOLS
        if isinstance(item, kind)
    ]


def value_range(field: FieldInfo) -> str:
    """The bounds a field is validated against, e.g. '>= 0, <= 1' or 'each >= 1'."""
    bounds = _bounds(field.metadata)
    for arg in get_args(field.annotation):  # list[Annotated[int, Field(ge=1)]]: item bounds
        if inner := _bounds(getattr(arg, "__metadata__", [])):
            bounds.append("each " + ", ".join(inner))
        for item in getattr(arg, "__metadata__", []):
            if isinstance(item, FieldInfo) and (inner := _bounds(item.metadata)):
                bounds.append("each " + ", ".join(inner))
    return ", ".join(bounds)


def _rows(model: type[BaseModel], prefix: str, instance: Any) -> list[tuple[str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        value = getattr(instance, name) if instance is not None else field.default
        if isinstance(value, BaseModel):
            rows += _rows(type(value), f"{key}.", value)
            continue
        if name == "targets":
            shown = f"{len(value)} sample targets" if value else "[]"
            meaning = field.description or "List of targets."
            rows.append((key, shown, f"{meaning} Each has the keys of `targets[]`."))
            if key == "targets":
                rows += _rows(TargetSettings, "targets[].", None)
            continue
        default = "" if value is None or str(value) == "PydanticUndefined" else str(value)
        meaning = field.description or ""
        if bounds := value_range(field):
            meaning += f" Range: {bounds}."
        rows.append((key, default, meaning))
    return rows


def settings_reference() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    defaults = Settings.model_construct()  # unvalidated: paths as written, not made absolute
    for key, default, meaning in _rows(Settings, "", defaults):
        lines.append(
            f"| `{key}` | `{default}` | {meaning} |" if default else f"| `{key}` | | {meaning} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_reference())
