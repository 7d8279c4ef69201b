"""Where the predictor has seen data: a trust region around the observed runs.

A predictor fitted on runs knows nothing of mixtures far from all of them, yet its smooth base
(a quadratic in each weight) keeps rising or falling there, so the best predicted mixture of a
large pool can lie well outside the data: on RegMix's 512 runs `climb predictor propose` chose a
weight of 0.68 on a domain no run put above 0.12, at total variation 0.60 from the nearest run
when runs' nearest neighbours sit at a median 0.21. The final choice therefore stays where runs
are, by two tests:

- distance: total variation to the nearest run at most `radius` = `multiple` x the runs' median
  nearest-neighbour distance (their own spacing, so the test scales with how densely the table
  covers the simplex: a table of 16 runs in 10 groups is sparser than one of 512);
- range: each weight within the range the runs gave it, widened by `MARGIN_SHARE` x `radius`
  (a mixture near one run can still push one weight past every run; the distance test alone
  allows a weight `radius` beyond the range).

Observed runs are always inside. Pure numpy; `choose_final` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Per-weight margin beyond the runs' range, as a share of the radius.
MARGIN_SHARE = 0.5
# Elements of one (candidates x runs x groups) block of distances: bounds memory on big tables.
_BLOCK_ELEMENTS = 4_000_000


def total_variation(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Total-variation distances between rows of (n, k) and (m, k) -> (n, m)."""
    return 0.5 * np.abs(first[:, None, :] - second[None, :, :]).sum(axis=2)


def nearest_run(mixtures: np.ndarray, runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each mixture's nearest run in total variation, in blocks."""
    mixtures = np.atleast_2d(np.asarray(mixtures, dtype=float))
    runs = np.atleast_2d(np.asarray(runs, dtype=float))
    step = max(1, _BLOCK_ELEMENTS // max(1, runs.size))
    distance = np.empty(len(mixtures))
    index = np.empty(len(mixtures), dtype=np.int64)
    for start in range(0, len(mixtures), step):
        block = total_variation(mixtures[start : start + step], runs)
        index[start : start + step] = block.argmin(axis=1)
        distance[start : start + step] = block.min(axis=1)
    return distance, index


def median_spacing(runs: np.ndarray) -> float:
    """Median total-variation distance from each distinct run to its nearest other run (0 with
    fewer than two distinct runs)."""
    distinct = np.unique(np.atleast_2d(np.asarray(runs, dtype=float)), axis=0)
    if len(distinct) < 2:
        return 0.0
    step = max(1, _BLOCK_ELEMENTS // distinct.size)
    nearest = []
    for start in range(0, len(distinct), step):
        block = total_variation(distinct[start : start + step], distinct)
        rows = np.arange(len(block))
        block[rows, start + rows] = np.inf  # not its own neighbour
        nearest.append(block.min(axis=1))
    return float(np.median(np.concatenate(nearest)))


@dataclass(frozen=True)
class Excursion:
    """How far one mixture lies from the runs."""

    distance: float  # total variation to the nearest run
    nearest_run: int  # its row in the runs
    beyond: dict[int, tuple[float, float, float]]  # group -> (weight, low, high) out of range
    inside: bool

    def to_json(self, names: list[str]) -> dict:
        return {
            "distance": self.distance,
            "nearest_run": self.nearest_run,
            "inside": self.inside,
            "weights_beyond_range": {
                names[group]: {"weight": weight, "range": [low, high]}
                for group, (weight, low, high) in self.beyond.items()
            },
        }


@dataclass(frozen=True)
class TrustRegion:
    """Mixtures within `radius` of a run and within each weight's widened range."""

    runs: np.ndarray  # (n, k)
    multiple: float
    spacing: float  # the runs' median nearest-neighbour distance
    enforce: bool = True  # False: only report a choice outside
    radius: float = field(init=False)
    low: np.ndarray = field(init=False)
    high: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        radius = self.multiple * self.spacing
        margin = MARGIN_SHARE * radius
        object.__setattr__(self, "radius", radius)
        object.__setattr__(self, "low", np.clip(self.runs.min(axis=0) - margin, 0, 1))
        object.__setattr__(self, "high", np.clip(self.runs.max(axis=0) + margin, 0, 1))

    @classmethod
    def around(cls, runs: np.ndarray, multiple: float, enforce: bool = True) -> TrustRegion:
        """The region `multiple` median spacings around `runs` (n, k)."""
        if multiple < 0:
            raise ValueError(f"trust region multiple {multiple}: must be non-negative")
        runs = np.atleast_2d(np.asarray(runs, dtype=float))
        return cls(runs, float(multiple), median_spacing(runs), enforce)

    def inside(self, mixtures: np.ndarray) -> np.ndarray:
        """(n,) True for mixtures inside the region."""
        mixtures = np.atleast_2d(np.asarray(mixtures, dtype=float))
        distance, _ = nearest_run(mixtures, self.runs)
        return (distance <= self.radius + 1e-9) & self._in_range(mixtures).all(axis=1)

    def excursion(self, mixture: np.ndarray) -> Excursion:
        mixture = np.asarray(mixture, dtype=float).reshape(1, -1)
        distance, index = nearest_run(mixture, self.runs)
        in_range = self._in_range(mixture)[0]
        beyond = {
            int(j): (float(mixture[0, j]), float(self.low[j]), float(self.high[j]))
            for j in np.flatnonzero(~in_range)
        }
        inside = bool(distance[0] <= self.radius + 1e-9 and not beyond)
        return Excursion(float(distance[0]), int(index[0]), beyond, inside)

    def _in_range(self, mixtures: np.ndarray) -> np.ndarray:
        return (mixtures >= self.low - 1e-9) & (mixtures <= self.high + 1e-9)


@dataclass(frozen=True)
class TrustReport:
    """The trust region as applied to one final choice."""

    multiple: float
    spacing: float
    radius: float
    enforced: bool
    excluded: int  # candidates left out for lying outside (0 when not enforced)
    best_predicted: np.ndarray  # (k,) the best predicted candidate of the whole pool
    best_predicted_score: float
    best: Excursion  # where that candidate lies
    chosen: Excursion  # where the final choice lies

    @property
    def best_outside(self) -> bool:
        return not self.best.inside

    def to_json(self, names: list[str]) -> dict:
        return {
            "multiple": self.multiple,
            "median_spacing": self.spacing,
            "radius": self.radius,
            "weight_margin": MARGIN_SHARE * self.radius,
            "enforced": self.enforced,
            "excluded_candidates": self.excluded,
            "best_predicted_outside": self.best_outside,
            "best_predicted": {
                "predicted": self.best_predicted_score,
                "weights": dict(zip(names, self.best_predicted.tolist(), strict=True)),
                **self.best.to_json(names),
            },
            "chosen": self.chosen.to_json(names),
        }


def trust_lines(report: dict | None, unit: str = "run") -> list[str]:
    """`TrustReport.to_json` in words, runs numbered from 1 and called `unit`; None: the
    region was off."""
    if report is None:
        return ["trust region: off"]
    lines = [
        f"trust region: within {report['radius']:.3g} total variation of a run "
        f"({report['multiple']:g} x the runs' median nearest-neighbour distance "
        f"{report['median_spacing']:.3g}), each weight within the runs' range +- "
        f"{report['weight_margin']:.3g}"
    ]
    best, chosen = report["best_predicted"], report["chosen"]
    if report["best_predicted_outside"]:
        lines.append(
            f"the best predicted mixture (predicted {best['predicted']:.6g}) lies outside: "
            f"{_excursion_words(best, unit)}"
        )
        if report["enforced"]:
            lines.append(
                f"chosen inside instead ({report['excluded_candidates']:,} candidates outside "
                f"left out): {_excursion_words(chosen, unit)}"
            )
    if not chosen["inside"]:
        lines.append(f"WARNING: the choice lies outside: {_excursion_words(chosen, unit)}")
    return lines


def _excursion_words(excursion: dict, unit: str) -> str:
    nearest = f"{unit} {excursion['nearest_run'] + 1}"
    text = f"{excursion['distance']:.3g} from the nearest run ({nearest})"
    for name, beyond in excursion["weights_beyond_range"].items():
        low, high = beyond["range"]
        text += f"; {name} {beyond['weight']:.3g} outside [{low:.3g}, {high:.3g}]"
    return text
