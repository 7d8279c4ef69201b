"""Mixture evaluation: the search's optimal mixture against the obvious baselines, each trained
as a larger model at equal tokens on the same seeds (common random numbers), so differences come
from the mixtures, not from initialisation or data order.

Pure functions only; `evaluation_run` trains the models, the asset writes what it returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from climb_assets.core.search.mixtures import (
    WEIGHTS_TEXT,
    MixtureConstraints,
    best_single_mixture,
    enforce_constraints,
    mixture_keys,
    regmix_prior,
    sample_dirichlet,
    token_count_array,
    weights_text,
)
from climb_assets.core.search.strategy import iteration_seed

OPTIMAL = "optimal"
BASELINES = ("natural", "uniform", "best_single", "best_observed", "random")
# Seed stream of the evaluation models, apart from every search iteration's streams.
EVALUATION_STREAM = 9000
_RANDOM_STREAM = 9001


def evaluation_seeds(seed: int, n: int) -> list[int]:
    """The seeds every mixture is trained with; seed s does not depend on n, so adding seeds
    keeps (and reuses) the earlier ones."""
    return [iteration_seed(seed, EVALUATION_STREAM, s) for s in range(n)]


def baseline_mixtures(
    optimal: np.ndarray,
    history_weights: np.ndarray,
    history_scores: np.ndarray,
    token_counts: Mapping[int, int] | Sequence[int] | np.ndarray,
    constraints: MixtureConstraints,
    seed: int,
) -> dict[str, np.ndarray]:
    """The optimal mixture and every baseline, by name, each feasible under `constraints`."""
    k = constraints.k
    scores = np.asarray(history_scores, dtype=float)
    history = np.atleast_2d(np.asarray(history_weights, dtype=float)).reshape(-1, k)
    if not np.isfinite(scores).any():
        raise ValueError("baseline_mixtures: the search history has no finite score")
    counts = token_count_array(token_counts)
    rng = np.random.default_rng(iteration_seed(seed, _RANDOM_STREAM))
    return {
        OPTIMAL: np.asarray(optimal, dtype=float),
        "natural": enforce_constraints(regmix_prior(counts, 1.0), constraints)[0],
        "uniform": enforce_constraints(np.full(k, 1.0 / k), constraints)[0],
        "best_single": best_single_mixture(history, scores, constraints),
        "best_observed": history[int(np.nanargmax(np.where(np.isfinite(scores), scores, np.nan)))],
        "random": sample_dirichlet(constraints, 1, rng)[0],
    }


def same_as(mixtures: Mapping[str, np.ndarray]) -> dict[str, str | None]:
    """For each name, the earlier name with the same mixture (trained once), or None."""
    first: dict[bytes, str] = {}
    found: dict[str, str | None] = {}
    for name, weights in mixtures.items():
        key = mixture_keys(weights)[0]
        found[name] = first.get(key)
        first.setdefault(key, name)
    return found


@dataclass(frozen=True)
class Stat:
    n: int
    mean: float
    std: float  # sample std (ddof=1); NaN with fewer than two seeds


def stat(values: Sequence[float] | np.ndarray) -> Stat:
    data = np.asarray(values, dtype=float)
    std = float(data.std(ddof=1)) if data.size > 1 else math.nan
    return Stat(int(data.size), float(data.mean()) if data.size else math.nan, std)


def summarize(runs: pl.DataFrame, metrics: Sequence[str]) -> pl.DataFrame:
    """One row per mixture (first-seen order): n, and mean and std of each metric."""
    rows = []
    for (name,), group in runs.partition_by("mixture", as_dict=True, maintain_order=True).items():
        row: dict[str, object] = {"mixture": name, "n": group.height}
        for metric in metrics:
            s = stat(group[metric].to_numpy())
            row[f"{metric}_mean"], row[f"{metric}_std"] = s.mean, s.std
        rows.append(row)
    return pl.DataFrame(rows)


@dataclass(frozen=True)
class Margin:
    baseline: str
    margin: float  # optimal mean objective minus the baseline's
    spread: float  # the larger of the two seed stds
    beaten: bool
    same_as_optimal: bool
    # std over seeds of (optimal - baseline) at the same seed; NaN when not given. Every mixture
    # trains with the same seeds, so this is the noise of the difference itself: informative
    # beside `spread`, but the verdict keeps the stricter unpaired rule.
    paired_std: float = math.nan


def margins(
    stats: Mapping[str, Stat],
    same: Mapping[str, str | None] | None = None,
    paired: Mapping[str, float] | None = None,
) -> list[Margin]:
    """The optimal's margin over each baseline; it beats a baseline when the margin exceeds the
    larger seed std (NaN std, i.e. one seed, never counts as beaten). A baseline identical to
    the optimal is reported but cannot be beaten, and is left out of the verdict. `paired`:
    each baseline's paired std (see `paired_stds`)."""
    same = same or {}
    paired = paired or {}
    best = stats[OPTIMAL]
    found = []
    for name, s in stats.items():
        if name == OPTIMAL:
            continue
        identical = same.get(name) == OPTIMAL
        margin = best.mean - s.mean
        spread = max(best.std, s.std)
        beaten = not identical and bool(margin > spread)  # NaN compares False
        found.append(Margin(name, margin, spread, beaten, identical, paired.get(name, math.nan)))
    return found


def paired_stds(runs: pl.DataFrame, metric: str = "objective") -> dict[str, float]:
    """Per mixture other than the optimal: the sample std over seeds of the optimal's `metric`
    minus the mixture's at the same seed (`seed_index` column); NaN with fewer than two seeds
    in common."""
    wide = runs.pivot(on="mixture", index="seed_index", values=metric).sort("seed_index")
    optimal = wide[OPTIMAL].to_numpy()
    found = {}
    for name in wide.columns:
        if name in ("seed_index", OPTIMAL):
            continue
        diff = optimal - wide[name].to_numpy()
        found[name] = stat(diff[np.isfinite(diff)]).std
    return found


def optimal_beats_baselines(found: Sequence[Margin]) -> bool:
    """The check's verdict: every baseline that differs from the optimal is beaten."""
    return all(m.beaten for m in found if not m.same_as_optimal)


def mean_std_table(summary: dict[str, Any]) -> pl.DataFrame:
    """One row per mixture ('best_single (= optimal)' when two are the same mixture): n and
    'mean ± std' of the objective and of each target's metric."""
    rows = []
    for name in summary["order"]:
        entry = summary["mixtures"][name]
        row = {"mixture": _label(name, entry), "n": entry["n"]}
        for metric in ["objective", *summary["headline_metrics"]]:
            row[metric] = _pm(entry[f"{metric}_mean"], entry[f"{metric}_std"])
        rows.append(row)
    return pl.DataFrame(rows)


def mixture_weights_table(summary: dict[str, Any], shown: float = 0.0005) -> pl.DataFrame:
    """One row per mixture, its weights as 'super-cluster: weight' text, largest first, those
    under `shown` left out: two columns however many super-clusters (the text wraps)."""
    rows = []
    for name in summary["order"]:
        text = weights_text(summary["mixtures"][name]["weights"], shown)
        rows.append({"mixture": name.replace("_", " "), WEIGHTS_TEXT: text})
    return pl.DataFrame(rows)


SHORT_METRIC = {"bits_per_byte": "bpb", "accuracy": "acc", "accuracy_norm": "acc_norm"}


def compact_mean_std_table(summary: dict[str, Any]) -> pl.DataFrame:
    """`mean_std_table` narrow enough for the UI's metadata column: the objective as
    'mean ± std' to 3 decimals, each target's metric as its mean ('text bpb'), no n."""
    rows = []
    for name in summary["order"]:
        entry = summary["mixtures"][name]
        mean, std = entry["objective_mean"], entry["objective_std"]
        label = _label(name, entry).replace("_", " ")
        row = {"mixture": label, "objective": _pm(mean, std, digits=3)}
        for metric in summary["headline_metrics"]:
            target, _, kind = metric.rpartition("/")
            value = entry[f"{metric}_mean"]
            row[f"{target} {SHORT_METRIC.get(kind, kind)}"] = (
                "n/a" if value is None else f"{value:.3f}"
            )
        rows.append(row)
    return pl.DataFrame(rows)


def verdict(margin: dict[str, Any]) -> str:
    """A margin's outcome in words: 'beaten', 'NOT beaten' or 'same as optimal'."""
    if margin["same_as_optimal"]:
        return "same as optimal"
    return "beaten" if margin["beaten"] else "NOT beaten"


def margins_table(margins: list[dict[str, Any]]) -> pl.DataFrame:
    """The optimal's margin over each baseline, five short columns (signed margin, the larger
    seed std, the paired std, verdict) that fit beside the UI's metadata keys."""
    return pl.DataFrame(
        [
            {
                "baseline": m["baseline"],
                "margin": _signed(m["margin"]),
                "± seeds": _signed(m["spread"], sign=False),
                "± paired": _signed(m.get("paired_std"), sign=False),
                "verdict": verdict(m),
            }
            for m in margins
        ],
        schema=dict.fromkeys(["baseline", "margin", "± seeds", "± paired", "verdict"], pl.String),
    )


def _label(name: str, entry: dict[str, Any]) -> str:
    """'best_single (= optimal)' when two mixtures are the same."""
    return f"{name} (= {entry['same_as']})" if entry["same_as"] else name


def _signed(value: float | None, sign: bool = True) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:+.4f}" if sign else f"{value:.4f}"


def _pm(mean: float | None, std: float | None, digits: int = 4) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {'n/a' if std is None else f'{std:.{digits}f}'}"
