"""`climb report` and the `report` metadata of the search assets: the latest search as one HTML
file (mixture, search trace, loss curves, super-clusters with their top terms and examples, the
evaluation and the dataset when they exist), for what the Dagster UI cannot show inline.

Results whose inputs no longer belong together (a search made on other super-clusters, an
evaluation or a dataset of another search) still render, under a "stale: ..." box at the top;
a stale search's weights are then shown by super-cluster number only, never beside the names
and token shares of the current super-clusters."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from climb_assets.core.clustering.naming import super_cluster_names
from climb_assets.core.search.final_race import describe_standings
from climb_assets.core.shared.atomic import write_text
from climb_assets.core.shared.identity import (
    SEARCH_ID,
    SUPER_CLUSTERS_ID,
    Comparison,
    compare,
    current_super_clusters_id,
    read_optimal,
    search_id,
)
from climb_assets.core.shared.report_html import Section, render_report
from climb_assets.store import Layout, iteration_key

TOP_CANDIDATES = 10
REPORT_TITLE = "CLIMB search report"
LOSS_SECTION = "Proxy loss curves"


@dataclass(frozen=True)
class WrittenReport:
    path: Path
    subtitle: str
    sections: list[Section]


def write_report(layout: Layout) -> WrittenReport:
    """Write `layout.report` from what the output folder holds now (`climb report`, and the
    assets whose results it shows, each once it has written them)."""
    subtitle, sections = report_sections(layout)
    write_text(render_report(REPORT_TITLE, subtitle, sections), layout.report)
    return WrittenReport(layout.report, subtitle, sections)


def report_sections(layout: Layout) -> tuple[str, list[Section]]:
    """The report's subtitle and sections, from what the output folder holds now (rendered as
    HTML by `write_report`, as markdown for the UI's metadata)."""
    if not layout.optimal_mixture.exists():
        raise FileNotFoundError(
            f"no search result at {layout.optimal_mixture}: run `climb run` (or materialize "
            "optimal_mixture) first"
        )
    optimal = read_optimal(layout)
    supers = pl.read_parquet(layout.super_clusters).sort("super_cluster")
    checks = identity_checks(layout, optimal)
    current = not checks[0].comparison.stale  # the search was made on these super-clusters
    names = super_cluster_names(
        zip(supers["super_cluster"], supers["top_terms"].to_list(), strict=True)
    )
    # A stale search's weights by number only: the current names are of other clusters.
    search_names = names if current else {int(i): f"#{i}" for i in optimal["weights"]}
    sections = [
        *stale_section(checks),
        mixture_section(optimal, supers, search_names, current),
        trace_section(layout, optimal, search_names),
        loss_section(layout, len(optimal["iterations"])),
        clusters_section(supers, names),
    ]
    if (summary := layout.evaluation_summary).exists():
        sections.append(evaluation_section(json.loads(summary.read_text())))
    if (card := layout.dataset_card).exists():
        sections.append(dataset_section(layout, card))
    subtitle = (
        f"{supers.height} super-clusters, {len(optimal['iterations'])} iterations; predicted "
        f"objective {optimal['predicted_objective']:.4g} (higher is better); output folder "
        f"{layout.root.resolve()}"
    )
    return subtitle, sections


def mixture_section(
    optimal: dict, supers: pl.DataFrame, names: dict[int, str], current: bool = True
) -> Section:
    """The search's weights by super-cluster; with `current` False (a search made on other
    super-clusters), by the search's own numbers, without the current token shares."""
    from climb_assets.core.shared.plots import bar_chart

    if current:
        shares = dict(zip(supers["super_cluster"], supers["token_share"], strict=True))
    else:
        shares = dict.fromkeys(sorted(map(int, optimal["weights"])))
    rows = [
        {
            "super-cluster": names[i],
            "weight": optimal["weights"].get(str(i), 0.0),
            "cap": optimal["caps"].get(str(i)),
            "token share": share,
            "best observed run": optimal["best_observed_weights"].get(str(i)),
        }
        for i, share in shares.items()
    ]
    rows.sort(key=lambda row: -row["weight"])
    chart = bar_chart(  # short labels: id and first term (the table has the full names)
        [row["super-cluster"].split(",")[0] for row in rows],
        [row["weight"] for row in rows],
        "optimal mixture weights",
        "weight",
    )
    notes = [
        f"Chosen by {optimal['choice_method']}; the predictor's choice: "
        f"{optimal.get('predicted_choice_method', optimal['choice_method'])} (region of "
        f"{optimal['region_size']}); predicted {optimal['predicted_objective']:.4g} ± "
        f"{optimal['predicted_spread']:.2g}, best observed run "
        f"{optimal['best_observed_objective']:.4g}."
    ]
    if optimal.get("final_race"):
        notes.append(describe_standings(optimal["final_race"]) + ".")
    if optimal.get("seed_noise") is not None:
        where = optimal.get("seed_noise_from")
        notes.append(f"Seed noise {optimal['seed_noise']:.3g}" + (f" ({where})." if where else "."))
    return Section(
        "Optimal mixture",
        notes=notes,
        tables=[("weights by super-cluster", rows)],
        plots=[("mixture weights", chart)],
    )


@dataclass(frozen=True)
class IdentityCheck:
    """One result checked against what it records being built from."""

    result: str  # "search", "evaluation", "dataset"
    built_from: str  # "super-clusters", "search"
    comparison: Comparison
    rerun: str  # the command that rebuilds the result


# The card renders each extra lineage key as a bullet "- Search id: `<id>`" (core.dataset.card).
_CARD_SEARCH_ID = re.compile(r"^- Search id: `([^`]+)`", re.MULTILINE)


def identity_checks(layout: Layout, optimal: dict) -> list[IdentityCheck]:
    """The search against the current super-clusters first, then the evaluation and the dataset
    (where they exist) against the current search."""
    current_search = search_id(optimal)
    found = compare(optimal, SUPER_CLUSTERS_ID, current_super_clusters_id(layout))
    checks = [IdentityCheck("search", "super-clusters", found, "climb run")]
    if layout.evaluation_summary.exists():
        summary = json.loads(layout.evaluation_summary.read_text())
        found = compare(summary, SEARCH_ID, current_search)
        checks.append(IdentityCheck("evaluation", "search", found, "climb evaluate"))
    if layout.dataset_card.exists():
        match = _CARD_SEARCH_ID.search(layout.dataset_card.read_text())
        found = Comparison(match.group(1) if match else None, current_search)
        checks.append(IdentityCheck("dataset", "search", found, "climb run"))
    return checks


def stale_lines(checks: list[IdentityCheck]) -> list[str]:
    """One line per stale result, and one naming those that record no identity (written before
    identities were recorded: warned about, not refused)."""
    lines = [
        f"stale: {c.result} built from {c.built_from} {c.comparison.recorded}, current "
        f"{c.comparison.current} — rerun `{c.rerun}`"
        for c in checks
        if c.comparison.stale
    ]
    if unknown := [c.result for c in checks if c.comparison.unknown]:
        lines.append(
            f"unchecked: {', '.join(unknown)} (written by an older climb-assets) record no "
            "identity of their inputs — rerun `climb run` to be sure they belong together"
        )
    return lines


def report_warnings(layout: Layout) -> list[str]:
    """What `climb report` prints on stderr: the stale lines at the top of the page."""
    return stale_lines(identity_checks(layout, read_optimal(layout)))


def stale_section(checks: list[IdentityCheck]) -> list[Section]:
    lines = stale_lines(checks)
    if not lines:
        return []
    if checks[0].comparison.stale:
        lines.append(
            "The search's weights are shown by its own super-cluster numbers, not beside the "
            "current super-clusters' names and token shares (those are other clusters)."
        )
    return [Section("Stale results", notes=lines, warning=True)]


def _runs(layout: Layout, iterations: int) -> pl.DataFrame:
    frames = [
        pl.read_parquet(path)
        for i in range(1, iterations + 1)
        if (path := layout.runs(iteration_key(i))).exists()
    ]
    return pl.concat(frames, how="diagonal") if frames else pl.DataFrame()


def trace_section(layout: Layout, optimal: dict, names: dict[int, str]) -> Section:
    from climb_assets.core.shared.plots import objective_by_iteration

    # Rounds measure seed noise only with seed repeats, which are off by default.
    repeated = any(s.get("seed_noise") is not None for s in optimal["iterations"])
    per_iteration = [
        {
            "iteration": s["iteration"],
            "proxies": s["proxies"],
            "best score": s["best_score"],
            "score spread": s.get("score_spread"),
            **({"seed noise": s.get("seed_noise")} if repeated else {}),
            "predictor cv spearman": s.get("cv_spearman"),
            "stopped at rung": s.get("stopped_at_rung", 0),
        }
        for s in optimal["iterations"]
    ]
    runs = _runs(layout, len(optimal["iterations"]))
    section = Section("Search trace", tables=[("per iteration", per_iteration)])
    if runs.height:
        section.plots.append(("objective by iteration", objective_by_iteration(runs)))
        top = runs.sort("score", descending=True).head(TOP_CANDIDATES)
        weights = [c for c in top.columns if c.startswith("w_") and c[2:].isdigit()]
        rows = [
            {"iteration": r["iteration"], "candidate": r["candidate_id"], "score": r["score"]}
            | {names.get(int(c[2:]), c): r[c] for c in weights if r[c]}
            for r in top.iter_rows(named=True)
        ]
        section.tables.append((f"the {TOP_CANDIDATES} best proxy runs (non-zero weights)", rows))
    return section


def loss_section(layout: Layout, iterations: int) -> Section:
    from climb_assets.core.shared.plots import loss_curves

    section = Section(LOSS_SECTION)
    for i in range(1, iterations + 1):
        path = layout.loss_curves(iteration_key(i))
        if not path.exists():
            continue
        chart = loss_curves(pl.read_parquet(path), iteration_key(i))
        if chart is not None:
            section.plots.append((f"loss curves {iteration_key(i)}", chart))
    return section


def clusters_section(supers: pl.DataFrame, names: dict[int, str]) -> Section:
    rows = [
        {
            "super-cluster": names[r["super_cluster"]],
            "clusters": r["n_clusters"],
            "documents": r["n_docs"],
            "tokens": r["n_tokens"],
            "token share": r["token_share"],
            "mean quality": r["mean_quality"],
            "top terms": r["top_terms"],
        }
        for r in supers.iter_rows(named=True)
    ]
    quotes = [
        (f"{names[r['super_cluster']]}: examples", list(r["examples"] or []))
        for r in supers.iter_rows(named=True)
    ]
    return Section("Super-clusters", tables=[("super-clusters", rows)], quotes=quotes)


def evaluation_section(summary: dict[str, Any]) -> Section:
    from climb_assets.core.search.evaluation import margins_table, mean_std_table
    from climb_assets.core.shared.plots import evaluation_margins

    margins = summary.get("margins") or []
    chart = evaluation_margins(margins, len(summary["seeds"]))
    return Section(
        "Evaluation against the baselines",
        notes=[f"Larger models at equal tokens, {len(summary['seeds'])} seeds each."],
        tables=[
            ("mean ± std", mean_std_table(summary).to_dicts()),
            ("margins", margins_table(margins).to_dicts()),
        ],
        plots=[] if chart is None else [("margins over the baselines", chart)],
    )


def dataset_section(layout: Layout, card: Path) -> Section:
    shards = layout.dataset_shards()
    rows = pl.scan_parquet(shards).select(pl.len()).collect().item() if shards else 0
    return Section(
        "Dataset",
        notes=[f"{rows} rows in {len(shards)} file(s) under {layout.dataset.resolve()}."],
        quotes=[("dataset card (README.md), first lines", card.read_text().splitlines()[:12])],
    )
