"""Results that no longer belong together are refused or marked, never mixed: every consumer of
the search checks the super-clusters it was made on, the report marks stale results, and a trace
checks that the source line still holds the traced record.

The pipeline's outputs come from test_pipeline's fixture; a changed clustering is simulated on a
copy of them by rewriting super_clusters.parquet, a changed corpus on a copy of the corpus."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from climb_assets.cli.main import main
from climb_assets.core.shared.identity import (
    SEARCH_ID,
    SUPER_CLUSTERS_ID,
    StaleInput,
    search_id,
    search_identity,
    super_clusters_id,
)
from climb_assets.definitions import build_definitions
from climb_assets.settings import Settings
from climb_assets.store import Layout
from climb_assets_tests import test_pipeline
from climb_assets_tests.live import write_settings_yaml

pipeline = test_pipeline.pipeline  # the end-to-end run, reused (a module fixture)


def copied(settings: Settings, layout: Layout, to: Path) -> tuple[Settings, Layout]:
    shutil.copytree(layout.root, to)
    return settings.model_copy(update={"output_dir": to}), Layout(to)


def recluster(layout: Layout) -> None:
    """As if a new shard moved the clusters: super-clusters 0 and 1 trade their top terms and
    examples, so each number now means the other's documents."""
    supers = pl.read_parquet(layout.super_clusters).sort("super_cluster")
    swapped = [1, 0, *range(2, supers.height)]
    moved = supers.select("top_terms", "examples")[swapped]
    supers.with_columns(moved["top_terms"], moved["examples"]).write_parquet(layout.super_clusters)


@pytest.fixture
def stale(pipeline, tmp_path: Path) -> tuple[Settings, Layout, str, str]:
    """A copy of the outputs whose super-clusters changed after the search; with the search's
    recorded super-clusters id and the current one."""
    settings, layout, _, _ = pipeline
    settings, layout = copied(settings, layout, tmp_path / "out")
    recorded = json.loads(layout.optimal_mixture.read_text())[SUPER_CLUSTERS_ID]
    recluster(layout)
    return settings, layout, recorded, super_clusters_id(layout.super_clusters)


def materialize(settings: Settings, asset: str, partition: str | None = None) -> str:
    """Materialize one asset alone, as from the UI; its step failure's message."""
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key=partition,
            asset_selection=[dg.AssetKey(asset)],
            raise_on_error=False,
        )
    assert not result.success, f"{asset} was materialized"
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.step_failure_data.user_failure_data.description


def config_of(settings: Settings, tmp_path: Path) -> str:
    return str(write_settings_yaml(settings, tmp_path / "climb.yaml"))


# --- what the pipeline records


def test_the_search_and_its_consumers_record_what_they_were_built_from(pipeline) -> None:
    _, layout, instance, _ = pipeline
    current = super_clusters_id(layout.super_clusters)
    optimal = json.loads(layout.optimal_mixture.read_text())
    assert optimal[SUPER_CLUSTERS_ID] == current
    assert all(s[SUPER_CLUSTERS_ID] == current for s in optimal["iterations"])
    summary = json.loads(layout.evaluation_summary.read_text())
    assert (summary[SUPER_CLUSTERS_ID], summary[SEARCH_ID]) == (current, search_id(optimal))
    card = layout.dataset_card.read_text()
    assert f"Search id: `{search_id(optimal)}`" in card
    assert f"Super clusters id: `{current}`" in card
    for asset in ("optimal_mixture", "mixture_evaluation", "climbmix_dataset"):
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        metadata = event.asset_materialization.metadata
        assert metadata[SUPER_CLUSTERS_ID].value == current, asset
        assert metadata[SEARCH_ID].value == search_id(optimal), asset


def test_the_super_clusters_id_follows_content_not_file_bytes(tmp_path: Path) -> None:
    frame = pl.DataFrame({"super_cluster": [1, 0], "top_terms": [["b"], ["a"]], "n_tokens": [5, 7]})
    frame.write_parquet(tmp_path / "a.parquet", compression="zstd")
    frame.sort("super_cluster").write_parquet(tmp_path / "b.parquet", compression="snappy")
    assert super_clusters_id(tmp_path / "a.parquet") == super_clusters_id(tmp_path / "b.parquet")
    frame.with_columns(pl.Series("n_tokens", [5, 8])).write_parquet(tmp_path / "c.parquet")
    assert super_clusters_id(tmp_path / "c.parquet") != super_clusters_id(tmp_path / "a.parquet")
    assert search_id({"a": 1, "b": [2.5]}) == search_id({"b": [2.5], "a": 1})


# --- consumers refuse


@pytest.mark.parametrize("asset", ["climbmix_dataset", "mixture_evaluation", "optimal_mixture"])
def test_a_consumer_of_the_search_refuses_other_super_clusters(stale, asset: str) -> None:
    settings, layout, recorded, current = stale
    card, evaluation = layout.dataset_card.read_text(), layout.evaluation_summary.read_text()
    message = materialize(settings, asset)
    assert "\n" not in message
    assert f"super-clusters {recorded}" in message and current in message, message
    assert "rematerialize" in message and "bootstrap_iteration" in message
    assert layout.dataset_card.read_text() == card  # nothing rewritten
    assert layout.evaluation_summary.read_text() == evaluation


def test_a_later_iteration_refuses_earlier_ones_on_other_super_clusters(stale) -> None:
    settings, layout, recorded, current = stale
    runs = layout.runs("iter-002").read_bytes()
    message = materialize(settings, "bootstrap_iteration", "iter-002")
    assert message.startswith("bootstrap_iteration iter-002: bootstrap_iteration iter-001 was")
    assert recorded in message and current in message
    assert "from iter-001 on" in message
    assert layout.runs("iter-002").read_bytes() == runs


def test_climb_evaluate_refuses_in_one_line(stale, tmp_path: Path, capsys) -> None:
    settings, layout, recorded, current = stale
    assert main(["--config", config_of(settings, tmp_path), "evaluate"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("climb: error: climb evaluate: optimal_mixture was searched on ")
    assert f"super-clusters {recorded}" in err and current in err


def test_a_search_without_an_identity_is_warned_about_not_refused(pipeline, tmp_path) -> None:
    settings, layout = copied(*pipeline[:2], tmp_path / "out")
    optimal = json.loads(layout.optimal_mixture.read_text())
    del optimal[SUPER_CLUSTERS_ID]  # as written before identities were recorded
    layout.optimal_mixture.write_text(json.dumps(optimal))
    warnings: list[str] = []
    found = search_identity(layout, "climbmix_dataset", warnings.append)
    assert found[SEARCH_ID] == search_id(optimal)
    assert len(warnings) == 1 and "records no super-cluster identity" in warnings[0]
    recluster(layout)  # unknown stays unknown: never refused
    search_identity(layout, "climbmix_dataset", warnings.append)
    optimal[SUPER_CLUSTERS_ID] = "0" * 12
    layout.optimal_mixture.write_text(json.dumps(optimal))
    with pytest.raises(StaleInput, match="searched on super-clusters 000000000000"):
        search_identity(layout, "climbmix_dataset", warnings.append)


# --- the report marks, never mixes


def test_climb_report_marks_a_stale_search_and_shows_no_mixed_names(
    stale, tmp_path: Path, capsys
) -> None:
    from climb_assets.defs.metadata import super_cluster_names_of

    settings, layout, recorded, current = stale
    assert main(["--config", config_of(settings, tmp_path), "report"]) == 0
    out, err = capsys.readouterr()
    line = f"stale: search built from super-clusters {recorded}, current {current}"
    assert f"climb: warning: {line} — rerun `climb run`" in err.splitlines()
    page = Path(out.strip()).read_text()
    assert page.index(line) < page.index("<h2>Optimal mixture</h2>")
    # The current super-clusters' names appear only in their own section, never by the weights.
    clusters = page.index("<h2>Super-clusters</h2>")
    for name in super_cluster_names_of(layout.super_clusters).values():
        assert page.find(html.escape(name.split(",")[0] + ",")) >= clusters, name


def test_climb_report_of_a_consistent_folder_has_no_stale_line(pipeline, tmp_path, capsys) -> None:
    settings, layout, _, _ = pipeline
    assert main(["--config", config_of(settings, tmp_path), "report"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert "Stale results" not in layout.report.read_text()


def test_the_report_marks_an_evaluation_of_another_search(pipeline, tmp_path, capsys) -> None:
    settings, layout = copied(*pipeline[:2], tmp_path / "out")
    summary = json.loads(layout.evaluation_summary.read_text())
    summary[SEARCH_ID] = "0" * 12
    layout.evaluation_summary.write_text(json.dumps(summary))
    assert main(["--config", config_of(settings, tmp_path), "report"]) == 0
    err = capsys.readouterr().err
    assert "stale: evaluation built from search 000000000000" in err
    assert "rerun `climb evaluate`" in err


# --- trace checks the source line


@pytest.fixture
def moved_corpus(pipeline, tmp_path: Path) -> tuple[Settings, dict]:
    """A copy of the corpus whose a.jsonl got a line inserted at the top, and a dataset row
    of that shard."""
    settings, layout, _, _ = pipeline
    corpus = tmp_path / "corpus"
    shutil.copytree(settings.corpus.path, corpus)
    shard = corpus / "a.jsonl"
    inserted = json.dumps({"id": "new", "text": "An inserted line."}) + "\n"
    shard.write_text(inserted + shard.read_text())
    rows = pl.read_parquet(layout.dataset_shards()).filter(pl.col("shard") == "a.jsonl")
    corpus_settings = settings.corpus.model_copy(update={"path": corpus})
    return settings.model_copy(update={"corpus": corpus_settings}), rows.row(0, named=True)


def test_climb_trace_refuses_when_a_line_was_inserted_above(moved_corpus, tmp_path, capsys) -> None:
    settings, row = moved_corpus
    assert main(["--config", config_of(settings, tmp_path), "trace", row["doc_id"]]) == 1
    err = capsys.readouterr().err.strip()
    path = settings.corpus.path / "a.jsonl"
    assert err == (
        f"climb: error: {path} changed since ingest (line {row['row']} now holds another "
        "record); rerun `climb run`"
    )


def test_trace_refuses_a_record_whose_text_was_edited(moved_corpus) -> None:
    from climb_assets.cli.lineage import SourceChanged, trace

    settings, row = moved_corpus
    shard = settings.corpus.path / "a.jsonl"
    lines = shard.read_text().splitlines(keepends=True)[1:]  # the insertion undone
    record = json.loads(lines[row["row"] - 1])
    lines[row["row"] - 1] = json.dumps({**record, "text": record["text"] + " Edited."}) + "\n"
    shard.write_text("".join(lines))
    with pytest.raises(SourceChanged, match=f"line {row['row']} now holds the same id with other"):
        trace(row["doc_id"], settings)
    record_back = {**record, "text": record["text"] + "  \n"}  # what normalization removes
    lines[row["row"] - 1] = json.dumps(record_back) + "\n"
    shard.write_text("".join(lines))
    assert trace(row["doc_id"], settings).source_record == record_back
