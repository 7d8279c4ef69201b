"""The settings reference table of the README, generated from the settings model itself."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from climb_assets.settings import Settings, TargetSettings


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
        rows.append((key, default, field.description or ""))
    return rows


def settings_reference() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in _rows(Settings, "", Settings()):
        lines.append(
            f"| `{key}` | `{default}` | {meaning} |" if default else f"| `{key}` | | {meaning} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_reference())
