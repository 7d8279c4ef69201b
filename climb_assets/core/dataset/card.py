"""The README.md beside the dataset's shards: a Hugging Face dataset card.

Inputs are plain dicts and lists so the card can be rendered and tested without Dagster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
import yaml

from climb_assets.core.dataset.build import SamplingReport
from climb_assets.core.dataset.writer import SHARD_GLOB

DEFAULT_TITLE = "ClimbMix-style dataset"
DEFAULT_LICENSE_NOTE = (
    "Every document keeps the licence of the corpus it came from; this dataset adds no terms of "
    "its own. See the provenance and licence of each source (the `shard` column names the source "
    "file; the corpus's README lists each source's licence) before redistributing."
)
DEFAULT_OBJECTIVE = (
    "The objective is the weighted mean of the target scores, each oriented so that "
    "**higher is better** (metrics where lower is better enter negated)."
)
SNIPPET_CHARS = 160
SETTINGS_SUMMARY = "Effective settings"
DETAILS_OPEN, DETAILS_CLOSE = "<details>", "</details>"
_DETAILS = re.compile(
    re.escape(DETAILS_OPEN) + r"<summary>(.*?)</summary>.*?" + re.escape(DETAILS_CLOSE), re.S
)
LOWER_IS_BETTER = {"bits_per_byte", "loss", "gold_loss"}
REQUIRED_LINEAGE_KEYS = ("code_version", "settings_hash", "upstream_runs")
MIXTURE_KEYS = ("super_cluster", "weight", "realized_share", "tokens", "docs")
_SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
)


class CardError(ValueError):
    """An input to the dataset card is missing a field it needs."""


# --------------------------------------------------------------------------- inputs


def mixture_rows(
    report: SamplingReport,
    df: pl.DataFrame,
    top_terms: Mapping[int, Sequence[str]] | None = None,
    examples: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """One row per super-cluster for `render_card`, from the sampler's report and output.

    `examples` defaults to the first sampled document of each super-cluster.
    """
    total = max(report.total_tokens, 1)
    first_docs = _first_text_per_super_cluster(df)
    return [
        {
            "super_cluster": s.super_cluster,
            "weight": s.weight,
            "realized_share": s.realized_tokens / total,
            "tokens": s.realized_tokens,
            "docs": s.docs,
            "shortfall_tokens": s.shortfall_tokens,
            "top_terms": list((top_terms or {}).get(s.super_cluster, [])),
            "example": (examples or {}).get(s.super_cluster, first_docs.get(s.super_cluster, "")),
        }
        for s in report.super_clusters
    ]


def _first_text_per_super_cluster(df: pl.DataFrame) -> dict[int, str]:
    if df.height == 0:
        return {}
    firsts = df.group_by("super_cluster", maintain_order=True).agg(pl.col("text").first())
    return {int(s): str(t) for s, t in firsts.iter_rows() if s is not None}


def _require(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], what: str) -> None:
    for index, row in enumerate(rows):
        missing = [k for k in keys if k not in row]
        if missing:
            raise CardError(f"{what}[{index}] lacks {missing}; has {sorted(row)}")


# --------------------------------------------------------------------------- formatting


def _cell(value: Any) -> str:
    """Text safe inside one markdown table cell."""
    text = re.sub(r"\s+", " ", str(value)).strip()
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def size_category(n_rows: int) -> str:
    """Hugging Face's size_categories bucket for a row count."""
    for limit, label in _SIZE_CATEGORIES:
        if n_rows < limit:
            return label
    return "n>1T"


# --------------------------------------------------------------------------- sections


def front_matter(title: str, n_docs: int, language: Sequence[str]) -> str:
    meta = {
        "pretty_name": title,
        "license": "other",
        "license_name": "mixed-source-licences",
        "task_categories": ["text-generation"],
        "language": list(language),
        "size_categories": [size_category(n_docs)],
        "tags": ["climb", "data-mixture", "pretraining"],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": SHARD_GLOB}]}
        ],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---"


def _summary_section(n_docs: int, n_tokens: int, n_shards: int, token_budget: int) -> str:
    share = n_tokens / token_budget if token_budget else 0.0
    return (
        "## Summary\n\n"
        f"- Documents: {n_docs:,} (repeats included)\n"
        f"- Tokens: {n_tokens:,} of a {token_budget:,}-token budget ({share:.1%})\n"
        f"- Shards: {n_shards} zstd parquet files (`{SHARD_GLOB}`), rows shuffled across domains\n"
        "- Columns: doc_id, text, shard, row, cluster, super_cluster, quality_score, n_tokens, "
        "repeat (0 on a document's first use)"
    )


def _mixture_section(mixture: Sequence[Mapping[str, Any]]) -> str:
    header = ["super-cluster", "weight", "realized share", "tokens", "docs", "top terms", "example"]
    rows = [
        [
            r["super_cluster"],
            f"{float(r['weight']):.4f}",
            f"{float(r['realized_share']):.4f}",
            f"{int(r['tokens']):,}",
            f"{int(r['docs']):,}",
            ", ".join(r.get("top_terms") or []) or "-",
            _snippet(str(r.get("example") or "")) or "-",
        ]
        for r in sorted(mixture, key=lambda r: -float(r["weight"]))
    ]
    parts = ["## The mixture", "", _table(header, rows)]
    short = [r for r in mixture if float(r.get("shortfall_tokens") or 0) > 0]
    if short:
        listed = ", ".join(
            f"{r['super_cluster']} ({float(r['shortfall_tokens']):,.0f} tokens)" for r in short
        )
        parts += ["", f"**Shortfalls** (repetition cap reached, not redistributed): {listed}."]
    return "\n".join(parts)


def _objective_section(
    targets: Sequence[Mapping[str, Any]], predicted_score: float | None, objective: str
) -> str:
    rows = [
        [
            t["name"],
            t.get("kind", "-"),
            t.get("metric") or "-",
            t.get("weight", 1.0),
            "lower" if t.get("metric") in LOWER_IS_BETTER else "higher",
        ]
        for t in targets
    ]
    score = "not available" if predicted_score is None else f"{predicted_score:.6g}"
    return "\n".join(
        [
            "## Targets and predicted objective",
            "",
            _table(["target", "kind", "metric", "weight", "better when"], rows),
            "",
            objective,
            f"Predicted objective of this mixture (LightGBM predictor): **{score}**.",
        ]
    )


def _method_section(settings: Mapping[str, Any], n_super_clusters: int) -> str:
    clustering = settings.get("clustering", {}) or {}
    search = settings.get("search", {}) or {}
    k = f" (k={clustering['k']})" if "k" in clustering else ""
    proxies = search.get("proxies_per_iteration")
    rounds = f"{len(proxies)} iterations of {proxies} proxies" if proxies else "a few iterations"
    return "\n".join(
        [
            "## How it was made (CLIMB, arXiv 2504.13161)",
            "",
            "1. Documents were normalized, exactly deduplicated and scored with heuristic "
            "quality signals.",
            "2. Each document was embedded (sentence-transformers) and the embeddings were "
            f"clustered with faiss K-means{k}.",
            "3. Low-quality clusters were pruned and clusters with close centroids merged into "
            f"{n_super_clusters} super-clusters.",
            f"4. Mixture weights were searched over {rounds}: small proxy LMs were trained on "
            "candidate mixtures and scored on the targets, and a LightGBM predictor proposed the "
            "next candidates.",
            "5. Documents were sampled per super-cluster to weight x budget tokens, without "
            "replacement first, then repeated up to the repetition factor; shortfalls are "
            "reported, not redistributed.",
        ]
    )


def _lineage_section(lineage: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    missing = [k for k in REQUIRED_LINEAGE_KEYS if k not in lineage]
    if missing:
        raise CardError(f"lineage lacks {missing}; has {sorted(lineage)}")
    runs = sorted((lineage["upstream_runs"] or {}).items())
    extras = [(k, v) for k, v in lineage.items() if k not in REQUIRED_LINEAGE_KEYS]
    bullets = [
        f"- Code version: `{lineage['code_version']}`",
        f"- Settings hash: `{lineage['settings_hash']}`",
        *(f"- {key.replace('_', ' ').capitalize()}: `{value}`" for key, value in extras),
    ]
    settings_yaml = yaml.safe_dump(dict(settings), sort_keys=True, allow_unicode=True).rstrip()
    return "\n".join(
        [
            "## Lineage",
            "",
            *bullets,
            "",
            _table(["upstream asset", "Dagster run id"], runs or [["-", "-"]]),
            "",
            f"{DETAILS_OPEN}<summary>{SETTINGS_SUMMARY}</summary>",
            "",
            "```yaml",
            settings_yaml,
            "```",
            "",
            DETAILS_CLOSE,
        ]
    )


def _loading_section(data_path: str) -> str:
    glob = f"{data_path.rstrip('/')}/{SHARD_GLOB}"
    return "\n".join(
        [
            "## How to load it",
            "",
            "```python",
            "from datasets import load_dataset",
            f'ds = load_dataset("parquet", data_files="{glob}", split="train")',
            "",
            "import polars as pl",
            f'df = pl.scan_parquet("{glob}").select("text", "super_cluster").collect()',
            "",
            "import duckdb",
            'duckdb.sql("SELECT super_cluster, sum(n_tokens) FROM '
            f"'{glob}' GROUP BY 1 ORDER BY 1\").show()",
            "```",
        ]
    )


# --------------------------------------------------------------------------- the card


def render_card(
    *,
    n_docs: int,
    n_tokens: int,
    n_shards: int,
    token_budget: int,
    mixture: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    predicted_score: float | None,
    lineage: Mapping[str, Any],
    settings: Mapping[str, Any],
    data_path: str = ".",
    title: str = DEFAULT_TITLE,
    language: Sequence[str] = ("en",),
    license_note: str = DEFAULT_LICENSE_NOTE,
    objective: str = DEFAULT_OBJECTIVE,
) -> str:
    """Markdown dataset card with YAML front matter.

    mixture rows: super_cluster, weight, realized_share, tokens, docs, and optionally top_terms
    (list of str), example (str), shortfall_tokens (see `mixture_rows`). targets rows: name and
    optionally kind, metric, weight. lineage: code_version, settings_hash, upstream_runs
    ({asset key: run id}), plus any other scalar shown as a bullet. settings: the effective
    settings as plain data (`Settings.model_dump(mode="json")`).
    """
    _require(mixture, MIXTURE_KEYS, "mixture")
    _require(targets, ("name",), "targets")
    sections = [
        front_matter(title, n_docs, language),
        f"# {title}",
        "Documents sampled from a clustered corpus by a mixture found with CLIMB-style search.",
        _summary_section(n_docs, n_tokens, n_shards, token_budget),
        _mixture_section(mixture),
        _objective_section(targets, predicted_score, objective),
        _method_section(settings, len(mixture)),
        _lineage_section(lineage, settings),
        _loading_section(data_path),
        "## Licence\n\n" + license_note,
    ]
    return "\n\n".join(sections) + "\n"


def card_body(card: str) -> str:
    """The card without its YAML front matter (the Hub reads it; a markdown view shows it as
    stray text)."""
    if card.startswith("---\n") and (end := card.find("\n---\n", 4)) != -1:
        return card[end + len("\n---\n") :].lstrip("\n")
    return card


def card_for_ui(card: str, card_path: str) -> str:
    """The card as the Dagster UI's markdown shows it well: no front matter, and each collapsed
    `<details>` block (the UI drops the HTML tags and would show the settings YAML expanded)
    replaced by a line naming where it is."""
    return _DETAILS.sub(
        lambda m: f"**{m.group(1)}**: in the card file, `{card_path}`.", card_body(card)
    )
