"""The pure helpers behind what the Dagster UI shows: charts, tables, example documents, the
embedded report, the card's UI form, the report server and the descriptions' formatting."""

from __future__ import annotations

import io
import math
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from climb_assets.cli.serve import report_server
from climb_assets.core.dataset.card import card_for_ui, render_card
from climb_assets.core.shared.plots import (
    _rotation,
    evaluation_margins,
    margin_chart,
    scatter_2d,
    wrap_label,
)
from climb_assets.core.shared.report_html import Section
from climb_assets.core.shared.report_markdown import render_markdown
from climb_assets.defs.metadata import (
    fine_cluster_label,
    iteration_numbers,
    per_iteration,
    runs_table,
    super_cluster_examples,
    table,
)


def _image(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png")


# --------------------------------------------------------------------------- charts


def test_margin_chart_centres_on_zero_not_on_the_raw_values() -> None:
    """Margins of 0.01-0.03 between objectives near -4.3 fill the chart: the bars' lengths
    differ visibly (a chart from 0 to -4.3 would show them equal)."""
    png = margin_chart(["natural", "uniform", "random"], [0.03, 0.01, -0.02], [0.005] * 3, "m")
    image = _image(png)
    assert image.shape[0] > 100 and image.shape[1] > 100
    green = (image[..., 1] > 0.4) & (image[..., 0] < 0.3) & (image[..., 2] < 0.3)
    assert green.sum() > 100, "the margins beyond their error are drawn green"


def test_margin_chart_rejects_mismatched_errors() -> None:
    with pytest.raises(ValueError, match="2 errors for 3 margins"):
        margin_chart(["a", "b", "c"], [1.0, 2.0, 3.0], [0.1, 0.1], "m")


def test_margin_chart_survives_missing_values() -> None:
    assert margin_chart(["a", "b"], [math.nan, 0.1], [math.nan, math.nan], "m")[:4] == b"\x89PNG"


def test_evaluation_margins_from_the_summary() -> None:
    margins = [
        {"baseline": "natural", "margin": 0.02, "spread": 0.01, "same_as_optimal": False},
        {"baseline": "best_observed", "margin": 0.0, "spread": None, "same_as_optimal": True},
    ]
    assert evaluation_margins(margins, 3)[:4] == b"\x89PNG"
    assert evaluation_margins([], 3) is None


def test_long_labels_wrap_and_many_labels_slant() -> None:
    assert wrap_label("best single super-cluster", 12) == "best single\nsuper-cluster"
    assert _rotation(["a", "b"]) == 0
    assert _rotation(["best_observed", "natural_shares", "uniform", "random", "optimal"]) == 30
    assert _rotation([str(i) for i in range(20)]) == 90


def test_scatter_names_unlabelled_points() -> None:
    png = scatter_2d(np.eye(3)[:, :2], [0, None, 1], "t", none_label="pruned", legend_title="sc")
    assert png[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- tables


def _records(value: dg.MetadataValue) -> list[dict]:
    return [record.data for record in value.records]


def test_table_rounds_cuts_and_says_na() -> None:
    frame = pl.DataFrame(
        {
            "x": [1.23456789, None, math.nan],
            "terms": [["a"] * 40, [], ["b"]],
            "w" * 40: [1, 2, 3],
        }
    )
    shown = table(frame)
    rows = _records(shown)
    assert [r["x"] for r in rows] == [1.235, "n/a", "n/a"]
    assert len(rows[0]["terms"]) <= 60 and rows[0]["terms"].endswith("…")
    assert all(len(c.name) <= 24 for c in shown.schema.columns)


def test_runs_are_narrow_whatever_the_number_of_super_clusters() -> None:
    weights = {f"w_{i}": [0.0] * 2 for i in range(12)}
    weights["w_10"] = [0.8, 0.0001]
    weights["w_2"] = [0.2, 0.9999]
    runs = pl.DataFrame(
        {"candidate_id": [0, 1], "source": ["vertex", "dirichlet"], **weights}
        | {
            "objective": [-2.31234, -2.4],
            "text/bits_per_byte": [4.7, 4.8],
            "predicted": [None, -2.3],
        }
    )
    shown = runs_table(runs, 64)
    assert [c.name for c in shown.schema.columns] == [
        "candidate_id", "source", "objective", "predicted", "super-cluster: weight",
    ]  # fmt: skip
    rows = _records(shown)
    assert rows[0]["super-cluster: weight"] == "10: 0.800, 2: 0.200"  # by number, largest first
    assert rows[1]["super-cluster: weight"] == "2: 1.000"  # a weight under 0.0005 left out
    assert rows[0]["objective"] == -2.312 and rows[0]["predicted"] == "n/a"


def test_per_iteration_shows_missing_as_na() -> None:
    md = per_iteration({"iter-002": 0.81234, "iter-001": None}, "cv spearman").value
    lines = md.splitlines()
    assert lines[0] == "| iteration | cv spearman |"
    assert lines[2:] == ["| iter-001 | n/a |", "| iter-002 | 0.8123 |"]
    assert "null" not in md


def test_iteration_numbers_are_numbers() -> None:
    earlier = pl.DataFrame({"score": [-4.0, -3.5]})
    numbers = iteration_numbers(2, pl.Series([-3.9, -3.7]), earlier)
    assert isinstance(numbers["iteration"], dg.IntMetadataValue)
    assert numbers["iteration"].value == 2
    assert numbers["mean_objective"].value == pytest.approx(-3.8)
    assert numbers["best_objective_so_far"].value == -3.5
    assert iteration_numbers(1, pl.Series([-3.9]), None)["best_objective_so_far"].value == -3.9
    assert all(isinstance(v, dg.IntMetadataValue | dg.FloatMetadataValue) for v in numbers.values())


def test_fine_clusters_are_named_by_their_super_cluster() -> None:
    assert fine_cluster_label(12, 3) == "cluster 12 (in super-cluster 3)"
    assert fine_cluster_label(5, None) == "cluster 5 (pruned)"


def test_super_cluster_examples_table() -> None:
    summary = pl.DataFrame(
        {
            "super_cluster": [1, 0],
            "top_terms": [["python", "module", "import"], ["lord", "god"]],
            "examples": [["import os | sys\nprint(x)", "x" * 500], ["In the beginning"]],
        }
    )
    mapping = pl.DataFrame(
        {"cluster": [0, 1, 2, 3], "super_cluster": [1, 0, None, 1]},
        schema={"cluster": pl.Int32, "super_cluster": pl.Int32},
    )
    md = super_cluster_examples(summary, mapping, {0: "0: lord, god", 1: "1: python"}).value
    lines = md.splitlines()
    assert lines[0].startswith("| super-cluster | fine clusters |")
    assert lines[2] == "| 0: lord, god | 1 | lord, god | **(1)** In the beginning |"
    assert lines[3].startswith("| 1: python | 0, 3 | python, module, import | **(1)** import")
    assert "import os \\| sys" in lines[3]
    assert " **(2)** xxx" in lines[3]
    assert "x" * 200 not in md  # snippets, not whole documents
    assert all(line.count(" | ") == 3 for line in lines if line.startswith("| "))


# --------------------------------------------------------------------------- report


def test_report_markdown_has_tables_images_and_quotes() -> None:
    png = margin_chart(["a"], [0.1], [0.01], "m")
    section = Section(
        "Optimal mixture",
        notes=["chosen by *race*"],
        tables=[("weights", [{"super-cluster": "3: a|b", "weight": 0.123456}])],
        plots=[("mixture weights", png)],
        quotes=[("examples", ["a <b>bold</b> line"])],
    )
    md = render_markdown("CLIMB search report", "2 iterations", [section], "footer")
    assert "## Optimal mixture" in md
    assert "| 3: a\\|b | 0.1235 |" in md
    assert "![mixture weights](data:image/png;base64," in md
    assert "> a \\<b\\>bold\\</b\\> line" in md
    assert "chosen by \\*race\\*" in md
    assert md.rstrip().endswith("footer")


# --------------------------------------------------------------------------- dataset card


def _card() -> str:
    return render_card(
        n_docs=10,
        n_tokens=1000,
        n_shards=1,
        token_budget=1000,
        mixture=[
            {"super_cluster": 0, "weight": 1.0, "realized_share": 1.0, "tokens": 1000, "docs": 10}
        ],  # fmt: skip
        targets=[{"name": "text"}],
        predicted_score=None,
        lineage={"code_version": "x", "settings_hash": "y", "upstream_runs": {}},
        settings={"seed": 1},
    )


def test_card_keeps_its_details_block_for_the_hub() -> None:
    card = _card()
    assert card.startswith("---\n")
    assert "<details><summary>Effective settings</summary>\n\n```yaml\nseed: 1\n" in card


def test_card_for_the_ui_has_no_html_block_and_names_the_file() -> None:
    shown = card_for_ui(_card(), "/out/climbmix/README.md")
    assert not shown.startswith("---")
    assert "<details>" not in shown and "</details>" not in shown and "seed: 1" not in shown
    assert "**Effective settings**: in the card file, `/out/climbmix/README.md`." in shown
    assert "## How to load it" in shown  # what follows the block is kept


# --------------------------------------------------------------------------- report server


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    report = tmp_path / "report.html"
    report.write_text("<html><body>the report</body></html>")
    (tmp_path / "secret.txt").write_text("not served")
    server = report_server(report, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}", report
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_report_server_serves_the_report_only(served: tuple[str, Path]) -> None:
    url, report = served
    for path in ("/", "/report.html"):
        with urllib.request.urlopen(url + path, timeout=5) as answer:
            assert answer.headers["Content-Type"].startswith("text/html")
            assert b"the report" in answer.read()
    report.write_text("<html><body>rewritten</body></html>")
    with urllib.request.urlopen(url + "/", timeout=5) as answer:
        assert b"rewritten" in answer.read()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(url + "/secret.txt", timeout=5)
    assert missing.value.code == 404


# --------------------------------------------------------------------------- descriptions


def test_descriptions_have_no_markdown_code_marks() -> None:
    """The UI shows some descriptions as plain text, where backticks stay literal."""
    from climb_assets.definitions import build_definitions
    from climb_assets.settings import Settings

    defs = build_definitions(Settings())
    graph = defs.resolve_asset_graph()
    texts = {key.to_user_string(): graph.get(key).description for key in graph.get_all_asset_keys()}
    for key in graph.asset_check_keys:
        texts[f"check {key.name}"] = graph.get_check_spec(key).description
    texts |= {f"sensor {s.name}": s.description for s in defs.sensors or []}
    texts |= {f"schedule {s.name}": s.description for s in defs.schedules or []}
    marked = {name: text for name, text in texts.items() if text and "`" in text}
    assert not marked, marked
