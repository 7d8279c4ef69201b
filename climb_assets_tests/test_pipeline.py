"""End to end: every asset materialized by `run_pipeline` on a slice of the bundled sample,
with the real encoder, faiss, proxy LMs and LightGBM, into a real (temporary) Dagster instance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from climb_assets.cli.runner import run_pipeline
from climb_assets.definitions import build_definitions
from climb_assets.defs.automation import SCHEDULED_TAG
from climb_assets.defs.graph import Stage, stages
from climb_assets.store import Layout, iteration_runs
from climb_assets_tests.conftest import small_settings, with_tiny_evaluation


@pytest.fixture(scope="module")
def pipeline(slice_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("out")
    settings = with_tiny_evaluation(small_settings(slice_corpus, out))
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        run_ids = run_pipeline(defs, settings, instance, echo=lambda _: None, evaluate=True)
        yield settings, Layout(out), instance, run_ids


def latest(instance: dg.DagsterInstance, asset: str) -> dg.EventLogEntry:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    assert event is not None, f"{asset} was never materialized"
    return event


def test_every_asset_materialized_and_checks_pass(pipeline) -> None:
    settings, _, instance, run_ids = pipeline
    defs = build_definitions(settings)
    for key in defs.resolve_asset_graph().materializable_asset_keys:
        latest(instance, key.to_user_string())
    for run_id in run_ids:
        for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = event.dagster_event.event_specific_data
            if evaluation.check_name == "optimal_beats_baselines":
                continue  # a statistical claim (WARN); tiny evaluation models need not bear it
            assert evaluation.passed, f"check {evaluation.check_name} failed in run {run_id}"


def test_documents_index_and_rejects(pipeline) -> None:
    settings, layout, _, _ = pipeline
    index = pl.read_parquet(layout.document_index)
    assert index["content_hash"].is_unique().all()
    assert index["doc_id"].is_unique().all()
    shards = ["a.jsonl", "b.jsonl.gz", "c.parquet"]
    docs = pl.concat([pl.read_parquet(layout.documents(s)) for s in shards])
    assert docs.height >= index.height > 300
    assert {"quality_score", "n_tokens", "content_hash"} <= set(docs.columns)


def test_embeddings_are_unit_float16_in_document_order(pipeline) -> None:
    _, layout, _, _ = pipeline
    vectors = np.load(layout.embeddings("a.jsonl"), mmap_mode="r")
    docs = pl.read_parquet(layout.documents("a.jsonl"))
    assert vectors.dtype == np.float16 and vectors.shape == (docs.height, 384)
    norms = np.linalg.norm(vectors.astype(np.float32), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-2)


def test_every_kept_document_in_one_super_cluster_or_pruned(pipeline) -> None:
    _, layout, _, _ = pipeline
    mapping = pl.read_parquet(layout.super_cluster_map)
    assert mapping.height == 8
    kept = mapping.filter(pl.col("status") == "kept")
    assert kept["super_cluster"].null_count() == 0
    summary = pl.read_parquet(layout.super_clusters)
    assert (summary["n_docs"] > 0).all()
    assert abs(summary["token_share"].sum() - 1.0) < 1e-6


def test_search_trace_and_optimal_mixture(pipeline) -> None:
    settings, layout, _, _ = pipeline
    first = pl.read_parquet(layout.runs("iter-001"))
    second = pl.read_parquet(layout.runs("iter-002"))
    assert (first.height, second.height) == (4, 3)
    assert set(second["source"]) <= {"corner", "exploit", "explore"}
    assert second["predicted"].null_count() == 0
    optimal = json.loads(layout.optimal_mixture.read_text())
    weights = np.array(list(optimal["weights"].values()))
    assert abs(weights.sum() - 1) < 1e-6 and (weights >= 0).all()
    assert optimal["objective_direction"] == "higher is better"


def test_dataset_written_with_card(pipeline) -> None:
    settings, layout, _, _ = pipeline
    shards = layout.dataset_shards()
    assert shards
    rows = pl.read_parquet(shards)
    assert {"doc_id", "text", "shard", "row", "super_cluster", "quality_score"} <= set(rows.columns)
    card = layout.dataset_card.read_text()
    assert "settings" in card.lower() and settings.fingerprint() in card


def test_iteration_out_of_order_is_refused(pipeline, tmp_path: Path) -> None:
    settings, layout, _, _ = pipeline
    # A fresh output folder that has everything up to the proxy pool but no iteration yet.
    fresh = settings.model_copy(update={"output_dir": tmp_path})
    import shutil

    shutil.copytree(layout.proxy_pool, Layout(tmp_path).proxy_pool)
    defs = build_definitions(fresh)
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key="iter-002",
            asset_selection=[dg.AssetKey("bootstrap_iteration")],
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "iter-001" in failure.step_failure_data.error.message
    assert not Layout(tmp_path).iteration("iter-002").exists()


def test_clustering_is_deterministic(pipeline, tmp_path: Path) -> None:
    settings, layout, _, _ = pipeline
    again = settings.model_copy(update={"output_dir": tmp_path})
    plan = (
        Stage(("corpus_documents", "shard_embeddings"), "shards"),
        Stage(("document_index", "centroids", "cluster_assignments"), "none"),
    )
    with dg.instance_for_test() as instance:
        run_pipeline(build_definitions(again), again, instance, plan=plan, echo=lambda _: None)
    other = Layout(tmp_path)
    assert np.array_equal(np.load(layout.centroids), np.load(other.centroids))
    for shard in ("a.jsonl", "b.jsonl.gz", "c.parquet"):
        assert pl.read_parquet(layout.documents(shard)).equals(
            pl.read_parquet(other.documents(shard))
        )
        assert pl.read_parquet(layout.assignments(shard)).equals(
            pl.read_parquet(other.assignments(shard))
        )


def test_plan_covers_every_asset_once() -> None:
    from climb_assets.settings import Settings

    defs = build_definitions(Settings())
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    planned = [a for stage in stages(defs) for a in stage.assets]
    assert len(planned) == len(set(planned))
    assert set(planned) | {"corpus_shard_files"} == keys  # the shard files are external


def test_any_dataset_row_traces_back_to_its_source_line(pipeline) -> None:
    from climb_assets.cli.lineage import trace
    from climb_assets.core.corpus.documents import normalize_text

    settings, layout, _, _ = pipeline
    rows = pl.read_parquet(layout.dataset_shards())
    for row in rows.sample(5, seed=1).iter_rows(named=True):
        found = trace(row["doc_id"], settings)
        assert found.source_file == settings.corpus.path / row["shard"]
        assert normalize_text(found.source_record["text"]) == row["text"]
        assert found.source_record["id"] == row["doc_id"]


def test_trace_of_an_unknown_document_is_a_clear_error(pipeline) -> None:
    from climb_assets.cli.lineage import trace

    settings, _, _, _ = pipeline
    with pytest.raises(LookupError, match="not in the dataset"):
        trace("no-such-doc", settings)


def test_duckdb_catalog_views_every_table(pipeline) -> None:
    import duckdb

    from climb_assets.cli.catalog import VIEWS, write_catalog

    _, layout, _, _ = pipeline
    assert set(write_catalog(layout)) == set(VIEWS)
    con = duckdb.connect(str(layout.catalog), read_only=True)
    kept = con.sql("SELECT count(*) FROM document_index").fetchall()[0][0]
    assigned = con.sql(
        "SELECT count(*) FROM document_index i JOIN assignments a USING (shard, row)"
    ).fetchall()[0][0]
    assert kept == assigned > 0
    reasons = dict(con.sql("SELECT reason, count(*) FROM rejects GROUP BY 1").fetchall())
    assert set(reasons) <= {
        "unparseable",
        "invalid_utf8",
        "missing_text",
        "empty_text",
        "over_long",
        "duplicate",
    }


def test_rerun_skips_unchanged_shards_even_when_touched(pipeline) -> None:
    """Shards are compared by content (an edit that keeps size and mtime is redone: see
    test_input_changes.py), so a new mtime alone redoes nothing."""
    import os

    settings, _, instance, _ = pipeline
    plan = (Stage(("corpus_documents", "shard_embeddings"), "shards"),)
    defs = build_definitions(settings)
    said: list[str] = []
    assert run_pipeline(defs, settings, instance, plan=plan, echo=said.append) == []
    assert sum("up to date, skipped" in line for line in said) == 3

    touched = settings.corpus.path / "b.jsonl.gz"
    before = touched.stat()
    os.utime(touched, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    try:
        said.clear()
        run_ids = run_pipeline(defs, settings, instance, plan=plan, echo=said.append)
    finally:
        os.utime(touched, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert run_ids == []
    assert sum("up to date, skipped" in line for line in said) == 3


def test_an_interrupted_iteration_resumes_from_its_finished_proxies(
    pipeline, tmp_path: Path
) -> None:
    import shutil

    from climb_assets.core.search.halving import halving_plan
    from climb_assets.core.search.proxy_jobs import proxy_run_key
    from climb_assets.core.shared.atomic import write_json

    settings, layout, _, _ = pipeline
    fresh = settings.model_copy(update={"output_dir": tmp_path})
    other = Layout(tmp_path)
    shutil.copytree(layout.proxy_pool, other.proxy_pool)
    shutil.copytree(layout.centroids.parent, other.centroids.parent)
    # As if the run had died after the first proxy: its checkpoint holds a recognisable score.
    first = pl.read_parquet(layout.runs("iter-001")).row(0, named=True)
    weights = [
        first[c] for c in sorted((c for c in first if c.startswith("w_")), key=lambda c: int(c[2:]))
    ]
    row = {
        k: v
        for k, v in first.items()
        if "/" in k or k in ("train_tokens_per_second", "final_train_loss")
    }
    row |= {"candidate_id": first["candidate_id"], "objective": 123.0}
    # Both halves of successive halving: its rung (where 123 makes it go on) and the full run.
    halving = halving_plan(
        settings.search.proxies_per_iteration[0], settings.search, settings.proxy
    )
    assert halving is not None
    rung, full = (halving.stop_after, halving.target_share), (None, 1.0)
    for suffix, (stop_after, target_share) in (("-rung", rung), ("", full)):
        write_json(
            {
                "run_key": proxy_run_key(fresh, other.proxy_pool),
                "weights": weights,
                "stop_after": stop_after,
                "target_share": target_share,
                "row": row,
                "curve": [],
            },
            other.iteration_work("iter-001") / f"candidate-{first['candidate_id']}{suffix}.json",
        )
    job = build_definitions(fresh).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key="iter-001",
            asset_selection=[dg.AssetKey("bootstrap_iteration")],
        )
    assert result.success
    runs = pl.read_parquet(other.runs("iter-001"))
    resumed = runs.filter(pl.col("candidate_id") == first["candidate_id"]).row(0, named=True)
    assert resumed["objective"] == resumed["rung_objective"] == 123.0
    assert (runs.filter(pl.col("candidate_id") != first["candidate_id"])["objective"] < 100).all()
    assert not other.iteration_work("iter-001").exists()


def test_mixture_evaluation_at_equal_tokens_with_common_seeds(pipeline) -> None:
    import torch

    from climb_assets.core.search.evaluation import BASELINES, evaluation_seeds
    from climb_assets.core.search.evaluation_run import evaluation_mixtures, evaluation_proxy
    from climb_assets.core.search.proxy_pool import ProxyPool
    from climb_assets.core.search.scoring import train_and_score
    from climb_assets.core.search.targets import load_target, objective
    from climb_assets.defs.assets.evaluation import evaluation_inputs

    settings, layout, instance, _ = pipeline
    runs = pl.read_parquet(layout.evaluation / "runs.parquet")
    summary = json.loads(layout.evaluation_summary.read_text())
    names = ["optimal", *BASELINES]
    assert runs.height == len(names) * 2
    assert runs["mixture"].unique(maintain_order=True).to_list() == names
    assert {"objective", "text/bits_per_byte", "choice/accuracy", "eval_text/bits_per_byte"} <= set(
        runs.columns
    )
    seeds = evaluation_seeds(settings.seed, 2)
    for _, group in runs.group_by("mixture"):
        assert group.sort("seed_index")["seed"].to_list() == seeds  # common random numbers
    assert [m["baseline"] for m in summary["margins"]] == list(BASELINES)
    assert set(summary["mixtures"]) == set(names)
    assert all(summary["mixtures"][n]["n"] == 2 for n in names)
    event = instance.get_latest_materialization_event(dg.AssetKey("mixture_evaluation"))
    assert "mean_std" in event.asset_materialization.metadata

    # The same mixture and seed train to the same scores, whatever else ran before.
    pool = ProxyPool.open(layout.proxy_pool)
    search = [load_target(t) for t in settings.targets]
    extra = [load_target(t) for t in settings.evaluation.targets]
    optimal = evaluation_mixtures(settings, evaluation_inputs(settings, layout))["optimal"]
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.proxy.cpu_threads)  # as in the worker that trained it
    try:
        again = train_and_score(
            evaluation_proxy(settings), pool, pool.tokenizer(), search + extra, optimal, seeds[0]
        )
    finally:
        torch.set_num_threads(threads)
    first = runs.filter((pl.col("mixture") == "optimal") & (pl.col("seed_index") == 0))
    assert objective(again.scores, search) == pytest.approx(first["objective"].item(), abs=1e-9)
    assert again.scores["eval_text/bits_per_byte"] == pytest.approx(
        first["eval_text/bits_per_byte"].item(), abs=1e-9
    )


def test_climb_evaluate_resumes_and_prints_the_table(
    pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import contextlib

    import yaml

    from climb_assets.cli import main as cli
    from climb_assets.cli import runner

    settings, layout, instance, _ = pipeline
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    monkeypatch.setenv("CLIMB_CONFIG", str(config))
    monkeypatch.setattr(runner, "project_instance", lambda: contextlib.nullcontext(instance))
    before = pl.read_parquet(layout.evaluation / "runs.parquet")
    # One seed: every model comes from the checkpoints of the first run, so nothing retrains.
    assert cli.main(["--config", str(config), "evaluate", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "optimal" in out and "best_single" in out and "±" in out and "margin" in out
    after = pl.read_parquet(layout.evaluation / "runs.parquet")
    assert after.equals(before.filter(pl.col("seed_index") == 0))
    assert cli.main(["--config", str(config), "evaluate"]) == 0  # restore both seeds
    assert pl.read_parquet(layout.evaluation / "runs.parquet").equals(before)

    empty = settings.model_copy(update={"output_dir": tmp_path / "none"})
    config.write_text(yaml.safe_dump(empty.model_dump(mode="json")))
    assert cli.main(["--config", str(config), "evaluate"]) == 1
    assert "optimal_mixture" in capsys.readouterr().err


def test_optimal_mixture_reports_caps_noise_and_the_best_observed_run(pipeline) -> None:
    import json

    from climb_assets.cli.run_plan import describe_result

    settings, layout, _, _ = pipeline
    result = json.loads(layout.optimal_mixture.read_text())
    weights, caps = result["weights"], result["caps"]
    assert set(caps) == set(weights)
    assert all(weights[key] <= caps[key] + 1e-6 for key in weights)
    # The predictor's choice is never predicted worse than the best run already observed.
    assert result["predicted_choice_objective"] >= result["best_observed_predicted"] - 1e-12
    assert result["predicted_choice_method"] in {"region mean", "best observed"}
    # The final race decides among it, the best run and the best single super-cluster.
    race = {row["finalist"]: row for row in result["final_race"]}
    assert set(race) == {"predicted", "best_observed", "best_single"}
    (winner,) = [name for name, row in race.items() if row["winner"]]
    assert result["choice_method"] == f"race winner: {winner}"
    means = {row["raced_as"]: row["mean"] for row in race.values()}
    assert race[winner]["mean"] == max(means.values())
    assert all(row["seeds"] == settings.search.final_race_seeds for row in race.values())
    chosen = {
        "predicted": result["predicted_choice"],
        "best_observed": result["best_observed_weights"],
    }.get(race[winner]["raced_as"])
    if chosen is not None:
        assert chosen == weights
    repeats = sum(s["repeated"] for s in result["iterations"])
    assert repeats == settings.search.seed_repeats * settings.iterations == 0  # off by default
    # The noise shown is then the race's: its finalists' spread over the same fresh seeds.
    stds = [row["std"] for row in race.values() if row["raced_as"] == row["finalist"]]
    assert result["seed_noise"] == pytest.approx(np.sqrt(np.mean(np.square(stds))))
    assert result["seed_noise_from"].startswith("final race: ")
    lines = describe_result(layout)
    assert "best observed run" in lines[0] and "final race on 2 fresh seeds" in lines[1]
    assert re.search(r"seed noise \d\.\d{3} \(final race: \d+ proxies\)$", lines[0]), lines[0]
    assert "cap" in lines[2] and len(lines) == 3 + len(weights)


def requested_assets(result) -> dict[str, int]:  # noqa: ANN001 - EvaluateAutomationConditionsResult
    return {
        r.key.to_user_string(): len(r.true_subset.expensively_compute_asset_partitions())
        for r in result.results
        if not r.true_subset.is_empty
    }


def test_the_scheduled_search_reruns_after_a_corpus_change_at_its_tick(pipeline) -> None:
    """The daemon's scheduled condition, evaluated at chosen times: nothing when `dagster dev`
    starts after `climb run`, nothing before the tick after a corpus change, the whole search
    and the dataset at the tick (iterations included), and nothing at the next tick if their
    inputs did not change again."""
    from datetime import datetime, timedelta, timezone

    settings, _, instance, _ = pipeline
    defs = build_definitions(settings)
    assert settings.automation.search_cron == "0 2 * * *"  # daily: one day later a tick passed
    now = datetime.now(timezone.utc)
    started = dg.evaluate_automation_conditions(defs, instance, evaluation_time=now)
    assert requested_assets(started) == {}
    clustering = Stage(
        ("document_index", "centroids", "cluster_assignments", "cluster_profiles",
         "super_clusters"), "none",
    )  # fmt: skip
    run_pipeline(defs, settings, instance, plan=(clustering,), echo=lambda _: None)
    before_tick = dg.evaluate_automation_conditions(
        defs, instance, evaluation_time=datetime.now(timezone.utc), cursor=started.cursor
    )
    assert requested_assets(before_tick) == {}
    tick = now + timedelta(days=1)
    at_tick = dg.evaluate_automation_conditions(
        defs, instance, evaluation_time=tick, cursor=before_tick.cursor
    )
    assert requested_assets(at_tick) == {"proxy_pool": 1}
    # The daemon would launch it with the schedule's tag; here it runs in-process with that tag.
    # The next evaluation follows it with the first iteration (and its published assets) only.
    defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey("proxy_pool")],
        tags={SCHEDULED_TAG: "true"},
    )
    followed = dg.evaluate_automation_conditions(
        defs, instance, evaluation_time=tick + timedelta(minutes=1), cursor=at_tick.cursor
    )
    assert requested_assets(followed) == {
        "bootstrap_iteration": 1, "mixture_candidates": 1, "proxy_scores": 1,
        "mixture_predictor": 1,
    }  # fmt: skip
    assert followed.get_requested_partitions(dg.AssetKey("bootstrap_iteration")) == {"iter-001"}
    next_tick = dg.evaluate_automation_conditions(
        defs, instance, evaluation_time=tick + timedelta(days=1), cursor=followed.cursor
    )
    assert requested_assets(next_tick) == {}, "inputs unchanged since the last tick"


def test_a_shard_registered_but_not_processed_names_what_to_run_first(pipeline) -> None:
    from climb_assets.cli.runner import launch
    from climb_assets.defs.partitions import CORPUS_SHARDS

    settings, _, instance, _ = pipeline
    defs = build_definitions(settings)
    instance.add_dynamic_partitions(CORPUS_SHARDS.name, ["zz_new.jsonl"])
    try:
        result = launch(defs, instance, ("cluster_profiles",), echo=lambda _: None)
    finally:
        instance.delete_dynamic_partition(CORPUS_SHARDS.name, "zz_new.jsonl")
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.event_specific_data.error.message
    assert "zz_new.jsonl are registered but not processed" in message
    assert "Materialize corpus_documents for zz_new.jsonl" in message


def test_results_are_readable_on_the_asset_pages(pipeline) -> None:
    """Tables inline (not markdown behind a link), super-clusters named by their top terms,
    numbers rounded, row counts and column schemas, the dataset card rendered, every check
    described."""
    settings, layout, instance, _ = pipeline
    mixture = latest(instance, "optimal_mixture").asset_materialization.metadata
    weights = mixture["mixture"].value
    assert isinstance(weights, dg.TableMetadataValue)
    names = [record.data["name"] for record in weights.records]
    supers = pl.read_parquet(layout.super_clusters)
    first_terms = supers.sort("super_cluster")["top_terms"][0][0]
    assert any(first_terms in name for name in names), names
    assert all(len(repr(r.data["weight"])) <= 8 for r in weights.records), "rounded weights"
    assert isinstance(mixture["predicted_objective"].value, float)  # charted in the Plots tab
    report = mixture["report"].value  # embedded: a file:// link would not open from the UI
    assert report.startswith("# CLIMB search report") and "file://" not in report
    assert "![mixture weights](data:image/png;base64," in report
    assert "climb report --serve" in mixture["report_page"].value

    importance = latest(instance, "mixture_predictor").asset_materialization.metadata
    features = [r.data["super_cluster"] for r in importance["feature_importance"].value.records]
    assert not any(f.startswith("w_") for f in features), features

    dataset = latest(instance, "climbmix_dataset").asset_materialization.metadata
    assert dataset["card"].value.startswith("#"), "the card is rendered as markdown"
    assert (
        dataset["dagster/row_count"].value
        == pl.scan_parquet(layout.dataset_shards()).select(pl.len()).collect().item()
    )
    assert "doc_id" in {c.name for c in dataset["dagster/column_schema"].value.columns}
    clusters = latest(instance, "super_clusters").asset_materialization.metadata
    assert clusters["dagster/row_count"].value == supers.height
    examples = clusters["examples"].value
    assert len(examples.splitlines()) == 2 + supers.height and "| **(1)** " in examples

    graph = build_definitions(settings).resolve_asset_graph()
    undescribed = [key.name for key in graph.asset_check_keys if not graph.get(key).description]
    assert not undescribed, f"checks without a description: {undescribed}"


def test_climb_report_writes_one_self_contained_page(pipeline, tmp_path: Path, capsys) -> None:
    from climb_assets.cli.main import main
    from climb_assets_tests.live import write_settings_yaml

    settings, layout, _, _ = pipeline
    config = write_settings_yaml(settings, tmp_path / "climb.yaml")
    assert main(["--config", str(config), "report"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == layout.report.resolve()
    page = path.read_text()
    for heading in ("Optimal mixture", "Search trace", "Proxy loss curves", "Super-clusters",
                    "Evaluation against the baselines", "Dataset"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in page, heading
    assert page.count('src="data:image/png;base64,') >= 3
    assert "Seed noise " in page and "(final race: " in page  # no seed repeats by default
    assert "<th>seed noise</th>" not in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_corpus_wide_stages_streamed_in_tiny_batches_give_the_same_results(
    pipeline, tmp_path: Path
) -> None:
    """The document index, profiles, proxy pool and dataset rebuilt from the same inputs with
    `execution.batch_docs` far below the corpus (7 of ~360 documents) equal the results the
    pipeline made with one batch."""
    import shutil

    settings, layout, _, _ = pipeline
    shutil.copytree(layout.root, tmp_path / "out")
    execution = settings.execution.model_copy(update={"batch_docs": 7})
    small = settings.model_copy(update={"output_dir": tmp_path / "out", "execution": execution})
    other = Layout(tmp_path / "out")
    for made in (other.document_index, other.cluster_profiles):  # rebuilt, not copied
        made.unlink()
    for folder in (other.proxy_pool, other.dataset):
        shutil.rmtree(folder)
    # one run each, in dependency order (the dataset does not depend on the index directly)
    assets = ("document_index", "cluster_profiles", "proxy_pool", "climbmix_dataset")
    with dg.instance_for_test() as instance:
        plan = tuple(Stage((asset,), "none") for asset in assets)
        run_pipeline(build_definitions(small), small, instance, plan=plan, echo=lambda _: None)
    assert pl.read_parquet(other.document_index).equals(pl.read_parquet(layout.document_index))
    profiles, again = (pl.read_parquet(x.cluster_profiles) for x in (layout, other))
    assert profiles.drop("mean_quality").equals(again.drop("mean_quality"))
    assert np.allclose(
        profiles["mean_quality"].fill_null(-1).to_numpy(),
        again["mean_quality"].fill_null(-1).to_numpy(),
        rtol=1e-12,
    )
    for path in sorted(layout.proxy_pool.iterdir()):
        assert path.read_bytes() == (other.proxy_pool / path.name).read_bytes(), path.name
    assert [p.name for p in layout.dataset_shards()] == [p.name for p in other.dataset_shards()]
    for path in layout.dataset_shards():
        assert pl.read_parquet(path).equals(pl.read_parquet(other.dataset / path.name))


def test_climb_run_says_how_long_the_shards_will_take_here(pipeline) -> None:
    from climb_assets.cli.preflight import describe_shard_work

    settings, _, _, _ = pipeline
    line = describe_shard_work(settings, ["a.jsonl", "b.jsonl.gz", "c.parquet"])
    assert re.fullmatch(
        r"to process: 3 shard\(s\), about [\d,]+ documents; ingest about \d+ s \([\d,]+ docs/s\)"
        r", embedding about \d+ (s|min) \([\d,.]+ docs/s\)",
        line,
    ), line


def test_long_steps_log_their_progress_and_the_evaluation_its_estimate(pipeline) -> None:
    """Each iteration, the final race and the evaluation count their models in the step log
    (what the UI shows and `climb`'s console renders), and the evaluation says beforehand how
    many models it trains and for about how long, from the proxies' measured speed."""
    from climb_assets.core.shared.progress import ProgressLine

    _, _, instance, run_ids = pipeline
    said = [e.user_message for run_id in run_ids for e in instance.all_logs(run_id)]
    counts: dict[str, list[ProgressLine]] = {}
    for line in filter(None, map(ProgressLine.parse, said)):
        counts.setdefault(line.task, []).append(line)
    assert {"iter-001", "iter-002", "final race", "mixture_evaluation"} <= set(counts)
    for task, lines in counts.items():
        total = lines[0].total
        assert [line.done for line in lines] == list(range(total + 1)), task
        assert all(line.left for line in lines[1:-1]) and lines[-1].left is None, task
    estimate = [
        line for line in said if line.startswith("mixture_evaluation: ") and "tok/s" in line
    ]
    assert len(estimate) == 1 and re.match(
        r"mixture_evaluation: \d+ model\(s\) to train \(of \d+ distinct mixtures x 2 seed\(s\)\), "
        r"5,000 tokens each, about \w+ \(proxies trained at [\d,]+ tok/s",
        estimate[0],
    ), estimate


def test_search_designs_spend_the_same_proxies_and_iterative_is_the_product(
    pipeline, tmp_path: Path
) -> None:
    from climb_assets.core.search.ablation import equal_budget_designs, proxy_budget, run_design
    from climb_assets.core.search.mixtures import constraint_budget
    from climb_assets.core.search.proxy_jobs import (
        ProxyTrainer,
        proxy_run_key,
        with_absolute_target_paths,
    )
    from climb_assets.store import corpus_token_counts

    settings, layout, _, _ = pipeline
    designs = equal_budget_designs(settings.search)
    assert [d.name for d in designs] == [
        "iterative",
        "one-shot",
        "one-shot-cover",
        "best-of-random",
    ]
    budget = proxy_budget(settings.search)
    assert budget == 7 + 3 * 2  # rounds 4 + 3, no seed repeats (the default), race 3 x 2 seeds
    assert {proxy_budget(d.search) for d in designs} == {budget}
    assert designs[1].search.proxies_per_iteration == [budget - 6]
    assert designs[1].search.initial_design == "regmix"
    assert designs[3].search.final_race_seeds == 0
    trainer_settings = with_absolute_target_paths(settings)
    results = {}
    for design in designs:
        trainer = ProxyTrainer(
            trainer_settings,
            layout.proxy_pool.resolve(),
            tmp_path / design.name,
            proxy_run_key(trainer_settings, layout.proxy_pool),
        )
        results[design.name] = run_design(
            design,
            settings,
            corpus_token_counts(layout, settings),
            constraint_budget(settings),
            trainer,
            log=lambda _: None,
        )
        # A proxy is one training whether successive halving stopped it at its rung or not.
        trained = {p.stem.removesuffix("-rung") for p in (tmp_path / design.name).glob("*.json")}
        assert len(trained) == results[design.name].proxies
    # Finalists equal to another are raced once, so a design may spend less, never more.
    assert all(r.proxies <= budget for r in results.values())
    assert results["best-of-random"].proxies == budget
    assert results["one-shot"].history.height == budget - 6  # the race spends the rest
    # The iterative design is the product's search: same runs, same chosen mixture.
    optimal = json.loads(layout.optimal_mixture.read_text())
    chosen = [optimal["weights"][k] for k in sorted(optimal["weights"], key=int)]
    assert results["iterative"].weights.tolist() == pytest.approx(chosen, abs=1e-12)
    product_runs = iteration_runs(layout, settings.iterations + 1)
    assert product_runs is not None
    assert results["iterative"].history["score"].to_list() == product_runs["score"].to_list()
    best = results["best-of-random"]
    columns = [f"w_{i}" for i in range(len(best.weights))]
    assert best.weights.tolist() == list(best.history.sort("score").select(columns).row(-1))
