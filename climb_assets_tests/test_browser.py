"""The Dagster UI in headless Chromium: the asset graph shows every stage, a materialization
launched with the UI's Materialize button succeeds, and the asset page shows its plot.

Uses Debian's /usr/bin/chromium through Playwright (never `playwright install`); skipped when
either is missing. Screenshots go to screenshots/ at the project root (git-ignored)."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from climb_assets.store import Layout
from climb_assets_tests.live import PROJECT, DagsterDev, Materialization, newer_materialization

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = PROJECT / "screenshots"
# One asset of every stage of the pipeline.
STAGE_ASSETS = (
    "corpus_documents", "centroids", "super_clusters", "bootstrap_iteration",
    "optimal_mixture", "climbmix_dataset",
)  # fmt: skip
MATERIALIZE = re.compile(r"^\s*Materialize\s*$")
UI_TIMEOUT_MS = 60_000
RUN_TIMEOUT_S = 240
EVALUATION_TIMEOUT_S = 600
PLOT_KEY, PLOT_ALT = "centroid_map", "centroids by super-cluster"  # super_clusters' plot


@pytest.fixture(scope="module")
def page(live_dagster: DagsterDev, live_search: str) -> Iterator:
    """Chromium on the shared `dagster dev`, once the whole pipeline is in its instance (run
    before the browser starts: `run_pipeline` and Playwright both run event loops here)."""
    assert live_search == "COMPLETED_SUCCESS"
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is missing: pip install playwright"
    )
    SCREENSHOTS.mkdir(exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="climb_chromium_") as profile,
        sync_api.sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1600, "height": 1000},
        )  # fmt: skip
        context.set_default_timeout(UI_TIMEOUT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()


def open_ui(page, dev: DagsterDev, path: str) -> None:
    """Open a UI page and dismiss the one-time 'Join the Dagster community' dialog."""
    page.goto(f"{dev.url}{path}", wait_until="networkidle")
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.click()


def shown_in_graph(node_texts: list[str], asset: str) -> bool:
    """Zoomed out, the graph shortens long names with an ellipsis ('bootstr…_iteration')."""
    for label in (text.strip() for text in node_texts):
        if label == asset:
            return True
        head, ellipsis, tail = label.partition("…")
        if ellipsis and asset.startswith(head) and asset.endswith(tail) and head and tail:
            return True
    return False


def test_asset_graph_shows_every_stage(page, live_dagster: DagsterDev) -> None:
    open_ui(page, live_dagster, "/assets/climbmix_dataset?view=lineage&lineageScope=upstream"
            "&lineageDepth=20")  # fmt: skip
    nodes = page.locator("svg foreignObject")
    nodes.filter(has_text="optimal_mixture").first.wait_for()
    texts = nodes.all_text_contents()  # SVG elements have no innerText
    page.screenshot(path=str(SCREENSHOTS / "asset_graph.png"))
    missing = [asset for asset in STAGE_ASSETS if not shown_in_graph(texts, asset)]
    assert not missing, f"not in the graph: {missing}; nodes shown: {texts}"


@pytest.fixture(scope="module")
def materialized_from_ui(page, live_dagster: DagsterDev) -> Materialization:
    """super_clusters materialized by clicking its Materialize button."""
    dev = live_dagster
    before = dev.latest_materialization("super_clusters")  # another test's, if any
    open_ui(page, dev, "/assets/super_clusters")
    # The button's accessible name includes its icon's label ("materialization Materialize").
    page.get_by_role("button").filter(has_text=MATERIALIZE).click()
    latest = dev.wait_until(
        newer_materialization(dev, "super_clusters", before),
        "the run launched from the UI to materialize super_clusters",
        RUN_TIMEOUT_S,
    )
    dev.wait_until(lambda: dev.run_status(latest.run_id) == "SUCCESS", "the run to end", 60)
    return latest


def test_materialize_button_launches_a_successful_run(
    page, live_dagster: DagsterDev, materialized_from_ui: Materialization
) -> None:
    run = next(r for r in live_dagster.runs() if r["runId"] == materialized_from_ui.run_id)
    assert run["assets"] == ["super_clusters"], "not the run of the asset page's button"
    assert run["status"] == "SUCCESS"
    assert "dagster/sensor_name" not in run["tags"], "launched by a sensor, not the UI"
    open_ui(page, live_dagster, f"/runs/{materialized_from_ui.run_id}")
    page.get_by_text("Success", exact=True).first.wait_for()
    page.screenshot(path=str(SCREENSHOTS / "super_clusters_run.png"))


def test_asset_page_shows_the_centroid_plot(
    page, live_dagster: DagsterDev, materialized_from_ui: Materialization
) -> None:
    """The metadata table keeps a plot behind '[Show Markdown]'; the dialog shows the image."""
    open_ui(page, live_dagster, "/assets/super_clusters")
    row = page.locator("tr", has_text=PLOT_KEY).first
    row.scroll_into_view_if_needed()
    row.get_by_text("[Show Markdown]").click()
    image = page.get_by_role("dialog").locator(f'img[alt="{PLOT_ALT}"]')
    image.wait_for()
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    image.evaluate("img => img.decode()")  # rejects when the PNG does not decode
    assert image.evaluate("img => img.naturalWidth") > 100
    page.screenshot(path=str(SCREENSHOTS / "super_clusters_plot.png"))


def super_cluster_names(dev: DagsterDev) -> list[str]:
    """How the UI names super-clusters: '3: lord, god, thee'."""
    from climb_assets.defs.metadata import super_cluster_names_of

    return list(super_cluster_names_of(Layout(dev.settings.output_dir).super_clusters).values())


def test_mixture_weights_and_their_plots_show_without_a_link(
    page, live_dagster: DagsterDev
) -> None:
    """The optimal mixture's weights are a table on the asset page itself, super-clusters named
    by their top terms; its numbers are charted in the metadata's Plots view."""
    open_ui(page, live_dagster, "/assets/optimal_mixture")
    row = page.locator("tr", has_text="mixture").filter(has=page.locator("table")).first
    weights = row.locator("table").first
    weights.scroll_into_view_if_needed()
    headers = [h.strip() for h in weights.locator("th").all_text_contents()]
    assert headers[:2] == ["name", "weight"], headers
    cells = weights.locator("td").all_text_contents()
    names = super_cluster_names(live_dagster)
    assert names and all(name in cells for name in names), (names, cells)
    page.screenshot(path=str(SCREENSHOTS / "optimal_mixture_weights.png"))

    page.get_by_role("button", name="Plots").click()
    chart = page.get_by_text("predicted_objective", exact=True).first
    chart.wait_for()
    page.locator("canvas").first.wait_for()
    page.screenshot(path=str(SCREENSHOTS / "optimal_mixture_plots.png"))


def show_markdown(page, key: str):  # noqa: ANN201 - a Playwright dialog locator
    """Open the metadata entry `key`'s markdown dialog ('[Show Markdown]') on the open page."""
    key_cell = page.locator("td").filter(has_text=re.compile(rf"^\s*{re.escape(key)}\s*$"))
    row = page.locator("tr").filter(has=key_cell).filter(has_text="[Show Markdown]").first
    try:
        row.scroll_into_view_if_needed()
        row.get_by_text("[Show Markdown]").click()
    except Exception:
        page.screenshot(path=str(SCREENSHOTS / f"no_markdown_{key}.png"), full_page=True)
        raise
    return page.get_by_role("dialog")


def decoded_image(scope, alt: str):  # noqa: ANN201 - a Playwright locator
    image = scope.locator(f'img[alt="{alt}"]')
    image.wait_for()
    image.evaluate("img => img.decode()")  # rejects when the PNG does not decode
    assert image.evaluate("img => img.naturalWidth") > 100
    return image


def test_the_report_opens_from_the_asset_page(page, live_dagster: DagsterDev) -> None:
    """One click on the asset page shows the report (embedded as markdown: a file:// link is
    refused by the browser from the UI's http:// page)."""
    open_ui(page, live_dagster, "/assets/optimal_mixture")
    assert page.locator('a[href^="file:"]').count() == 0, "a dead file:// link"
    page.get_by_text("climb report --serve", exact=False).first.wait_for()
    dialog = show_markdown(page, "report")
    decoded_image(dialog, "mixture weights")
    decoded_image(dialog, "objective by iteration")
    text = dialog.inner_text()
    assert all(name in text for name in super_cluster_names(live_dagster)), text[:2000]
    page.screenshot(path=str(SCREENSHOTS / "report_in_ui.png"))


def test_climb_report_serve_opens_in_the_browser(page, live_dagster: DagsterDev) -> None:
    """What `climb report --serve` serves: the whole HTML page over http://."""
    import threading

    from climb_assets.cli.serve import report_server

    report = Layout(live_dagster.settings.output_dir).report
    server = report_server(report, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        page.goto(f"http://{host}:{port}/{report.name}")
        decoded_image(page, "mixture weights")
        body = page.inner_text("body")
        assert all(name in body for name in super_cluster_names(live_dagster))
        page.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_super_clusters_show_example_documents(page, live_dagster: DagsterDev) -> None:
    supers = pl.read_parquet(Layout(live_dagster.settings.output_dir).super_clusters)
    open_ui(page, live_dagster, "/assets/super_clusters")
    dialog = show_markdown(page, "examples")
    dialog.locator("table").first.wait_for()
    rows = dialog.locator("tbody tr")
    assert rows.count() == supers.height
    first = " ".join(supers.sort("super_cluster")["examples"][0][0].split())[:20]
    assert first.split()[0] in rows.first.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "super_clusters_examples.png"))


def test_iteration_numbers_are_charted(page, live_dagster: DagsterDev) -> None:
    """Every bootstrap_iteration partition carries numbers (iteration, best and mean objective,
    best so far), charted in the Plots view's Events mode, and a chart of the rounds so far.

    The Plots view's Partitions mode stays empty: Dagster 1.13's UI lists a time-window
    asset's partitions newest first from today's date, ignoring the definition's end, so it
    asks for 'iter-338' .. 'iter-219' in December, keys these 1900-dated partitions lack
    (see bootstrap_iteration_plots_partitions.png)."""
    open_ui(page, live_dagster, "/assets/bootstrap_iteration")
    dialog = show_markdown(page, "score_by_iteration")
    decoded_image(dialog, "objective by iteration")
    dialog.get_by_role("button", name="Close").click()
    page.get_by_role("button", name="Plots").click()
    page.screenshot(path=str(SCREENSHOTS / "bootstrap_iteration_plots_partitions.png"))
    try:
        # The toggle's accessible name includes its icon's label, as Materialize's does.
        page.get_by_role("button").filter(has_text=re.compile(r"^\s*Events\s*$")).first.click()
        page.get_by_text("best_objective_so_far", exact=True).first.wait_for()
        page.locator("canvas").first.wait_for()
    finally:
        page.screenshot(path=str(SCREENSHOTS / "bootstrap_iteration_plots.png"), full_page=True)


@pytest.fixture(scope="module")
def evaluated(page, live_dagster: DagsterDev) -> Materialization:
    """mixture_evaluation materialized by its Materialize button (a tiny evaluation)."""
    dev = live_dagster
    before = dev.latest_materialization("mixture_evaluation")
    open_ui(page, dev, "/assets/mixture_evaluation")
    page.get_by_role("button").filter(has_text=MATERIALIZE).click()
    latest = dev.wait_until(
        newer_materialization(dev, "mixture_evaluation", before),
        "the run launched from the UI to materialize mixture_evaluation",
        EVALUATION_TIMEOUT_S,
    )
    return latest


def test_the_evaluation_chart_shows_margins(
    page, live_dagster: DagsterDev, evaluated: Materialization
) -> None:
    open_ui(page, live_dagster, "/assets/mixture_evaluation")
    dialog = show_markdown(page, "margins_chart")
    decoded_image(dialog, "margins over baselines")
    page.screenshot(path=str(SCREENSHOTS / "evaluation_margins.png"))
