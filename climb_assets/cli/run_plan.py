"""What a run optimises, said before it starts, and what it chose, said after: no setting acts
silently (targets, their source, the caps that bound each super-cluster's weight)."""

from __future__ import annotations

import json

from climb_assets.core.search.final_race import describe_standings
from climb_assets.settings import Settings
from climb_assets.store import Layout

SAMPLE_TARGETS = {target.name: target.path for target in Settings().targets}


def describe_run(settings: Settings) -> list[str]:
    """Lines printed by `climb run` before any work: the targets and where they come from."""
    current = {target.name: target.path for target in settings.targets}
    source = "the bundled sample's defaults" if current == SAMPLE_TARGETS else "your settings"
    lines = [f"targets ({source}; the search maximises their weighted objective):"]
    for target in settings.targets:
        metric = target.metric or ("bits_per_byte" if target.kind == "text" else "accuracy")
        lines.append(
            f"  {target.name}: {target.kind}, {metric}, weight {target.weight:g}, {target.path}"
        )
    return lines


def describe_result(layout: Layout) -> list[str]:
    """Lines printed after `climb run`: the chosen mixture beside each super-cluster's cap (the
    most weight its tokens allow) and the best run, with the noise that separates them."""
    if not layout.optimal_mixture.is_file():
        return []
    result = json.loads(layout.optimal_mixture.read_text())
    caps, observed = result.get("caps", {}), result["best_observed_weights"]
    lines = [
        f"optimal mixture ({result.get('choice_method', 'region mean')}): predicted objective "
        f"{result['predicted_objective']:.4f}; best observed run "
        f"{result['best_observed_objective']:.4f}"
        f" (predicted {result.get('best_observed_predicted', float('nan')):.4f}); seed noise "
        f"{_number(result.get('seed_noise'))}{_source(result.get('seed_noise_from'))}",
        "  super-cluster   weight      cap  best run",
    ]
    if result.get("final_race"):
        lines.insert(1, describe_standings(result["final_race"]))
    for key, weight in sorted(result["weights"].items(), key=lambda item: -item[1]):
        cap = caps.get(key)
        at_cap = "  (at cap)" if cap is not None and weight >= cap - 1e-6 else ""
        lines.append(f"  {key:>13} {weight:8.3f} {_number(cap, 8)} {observed[key]:9.3f}{at_cap}")
    return lines


def _source(measured_on: str | None) -> str:
    return f" ({measured_on})" if measured_on else ""


def _number(value: float | None, width: int = 0) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:{width}.3f}"
