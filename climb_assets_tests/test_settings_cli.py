"""Settings from YAML, and the `climb` command's config and error paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from climb_assets.cli.main import main
from climb_assets.cli.run_plan import describe_run
from climb_assets.settings import ConfigWarning, Settings, SettingsError, load_settings


def test_defaults_serve_the_bundled_sample() -> None:
    settings = Settings()
    assert settings.corpus.path == Path.cwd() / "data/corpus"  # absolute: hashed as the files
    assert settings.iterations == len(settings.search.proxies_per_iteration)


def test_yaml_overrides_nested_values(tmp_path: Path) -> None:
    path = tmp_path / "climb.yaml"
    path.write_text(yaml.safe_dump({"seed": 7, "clustering": {"k": 12}, "corpus": {"path": "/x"}}))
    with pytest.warns(ConfigWarning, match="sets the corpus but not `targets`"):
        settings = load_settings(path)
    assert (settings.seed, settings.clustering.k, settings.corpus.path) == (7, 12, Path("/x"))
    assert settings.clustering.niter == Settings().clustering.niter


def test_relative_paths_in_a_config_resolve_against_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "climb.yaml"
    config = {
        "output_dir": "out",
        "corpus": {"path": "corpus"},
        "targets": [{"name": "mine", "kind": "text", "path": "targets/mine.jsonl"}],
        "evaluation": {"targets": [{"name": "extra", "kind": "text", "path": "/abs/x.jsonl"}]},
    }
    path.write_text(yaml.safe_dump(config))
    settings = load_settings(path)  # corpus and targets both set: no warning
    assert settings.output_dir == folder / "out"
    assert settings.corpus.path == folder / "corpus"
    assert settings.targets[0].path == folder / "targets" / "mine.jsonl"
    assert settings.evaluation.targets[0].path == Path("/abs/x.jsonl")
    assert Settings().targets[0].path == Path.cwd() / "data/targets/held_out_text.jsonl"


def test_run_says_which_targets_it_optimises(tmp_path: Path) -> None:
    sample = describe_run(Settings())
    assert "bundled sample's defaults" in sample[0]
    assert any("held_out_text: text, bits_per_byte" in line for line in sample)
    mine = Settings(targets=[{"name": "mine", "kind": "text", "path": tmp_path / "m.jsonl"}])
    lines = describe_run(mine)
    assert "your settings" in lines[0] and len(lines) == 2 and "mine" in lines[1]


def test_unknown_or_ill_typed_keys_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"clustering": {"k": "many", "colour": 3}}))
    with pytest.raises(ValueError, match="clustering.k") as err:
        load_settings(path)
    assert "colour" in str(err.value) and str(path) in str(err.value)


def test_config_show_prints_effective_settings(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CLIMB_CONFIG", raising=False)
    path = tmp_path / "climb.yaml"
    path.write_text("clustering:\n  k: 33\n")
    assert main(["--config", str(path), "config", "show"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["clustering"]["k"] == 33 and shown["seed"] == Settings().seed


def test_missing_config_file_is_an_error(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CLIMB_CONFIG", raising=False)
    assert main(["--config", str(tmp_path / "none.yaml"), "config", "show"]) == 1
    assert "none.yaml" in capsys.readouterr().err


def test_settings_doc_documents_every_setting() -> None:
    from climb_assets.cli.settings_doc import SETTINGS_DOC, generated_block, settings_reference

    shown = generated_block(SETTINGS_DOC.read_text())
    assert shown == settings_reference(), (
        "docs/settings.md's settings table is stale; regenerate it with "
        "`python -m climb_assets.cli.settings_doc --write`"
    )


def test_loading_the_code_location_imports_no_heavy_library() -> None:
    """Every Dagster step process imports the definitions; only steps that need torch, faiss or
    the encoder may pay for importing them."""
    import subprocess
    import sys

    probe = (
        "import sys, climb_assets.definitions; "
        "print(sorted(m for m in ('torch', 'faiss', 'sentence_transformers', 'transformers', "
        "'lightgbm', 'accelerate') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- validation when loaded ---------------------------------------------------------------------


def load_yaml(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "climb.yaml"
    path.write_text(text)
    return load_settings(path)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("clustering: {k: 0}", "clustering.k: must be >= 1, got 0"),
        ("dataset: {token_budget: 0}", "dataset.token_budget: must be > 0, got 0"),
        ("dataset: {tolerance: 1.5}", "dataset.tolerance: must be <= 1, got 1.5"),
        ("clustering: {min_mean_quality: -0.1}", "clustering.min_mean_quality: must be >= 0"),
        ("search: {exploit_fraction: 2}", "search.exploit_fraction: must be <= 1, got 2"),
        (
            "search: {proxies_per_iteration: [4, 0]}",
            "search.proxies_per_iteration[1]: must be >= 1",
        ),
        ("search: {proxies_per_iteration: []}", "search.proxies_per_iteration: must have at least"),
        ("search: {cv_folds: 1}", "search.cv_folds: must be >= 2, got 1"),
        ("predictor: {learning_rate: 0}", "predictor.learning_rate: must be > 0, got 0"),
        ("predictor: {num_leaves: 1}", "predictor.num_leaves: must be >= 2, got 1"),
        ("proxy: {vocab_size: 100}", "proxy.vocab_size: must be >= 257, got 100"),
        ("proxy: {warmup_fraction: 1}", "proxy.warmup_fraction: must be < 1, got 1"),
        ("proxy: {d_model: 30, n_heads: 4}", "proxy.d_model: must be a multiple of n_heads (4)"),
        ("evaluation: {seeds: 0}", "evaluation.seeds: must be >= 1, got 0"),
        ("corpus: {max_chars: 0}", "corpus.max_chars: must be >= 1, got 0"),
        ("clustering: {k: 50, sample_size: 10}", "clustering.sample_size: must be >= k (50)"),
        ("clustering: {k: 5, target_super_clusters: 6}", "target_super_clusters: must be <= k"),
        (
            "targets: [{name: a, kind: text, path: a.jsonl, weight: -1}]",
            "targets[0].weight: must be >= 0, got -1",
        ),
        (
            "targets: [{name: a, kind: text, path: a.jsonl}, {name: a, kind: text, path: b.jsonl}]",
            "targets: target names must be unique",
        ),
    ],
)
def test_out_of_range_values_name_the_yaml_key(tmp_path: Path, yaml_text: str, message) -> None:
    with pytest.raises(SettingsError) as err:
        load_yaml(tmp_path, yaml_text)
    text = str(err.value)
    assert message in text, text
    assert "\n" not in text and "climb.yaml" in text


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"climb.yaml, line 3, column \d+: invalid YAML"):
        load_yaml(tmp_path, "clustering:\n  k: 3\n   bad: [\n")


def test_config_show_refuses_invalid_settings(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CLIMB_CONFIG", raising=False)
    path = tmp_path / "climb.yaml"
    path.write_text("clustering: {k: 0}\n")
    assert main(["--config", str(path), "config", "show"]) == 1
    assert "clustering.k: must be >= 1, got 0" in capsys.readouterr().err


def test_settings_reference_shows_ranges() -> None:
    from climb_assets.cli.settings_doc import settings_reference

    rows = {row.split("|")[1].strip(" `"): row for row in settings_reference().splitlines()[2:]}
    assert "Range: >= 1." in rows["clustering.k"]
    assert "Range: >= 0, <= 1." in rows["dataset.tolerance"]
    assert "Range: each >= 1." in rows["search.proxies_per_iteration"]


def test_a_malformed_target_fails_the_run_before_any_work(tmp_path: Path) -> None:
    from climb_assets.cli.preflight import check_targets
    from climb_assets.core.search.targets import TargetFileError

    bad = tmp_path / "t.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    settings = Settings(targets=[{"name": "t", "kind": "text", "path": bad}])
    with pytest.raises(TargetFileError, match=r"t.jsonl, line 2: invalid JSON"):
        check_targets(settings)


def test_a_budget_larger_than_the_corpus_names_the_dataset_budget() -> None:
    from climb_assets.core.dataset.build import DatasetError, check_corpus_supply

    check_corpus_supply(1000, 2000, 2.0)  # exactly fillable with every document twice
    with pytest.raises(DatasetError, match=r"dataset.token_budget=2,001 .* 1,000 tokens x"):
        check_corpus_supply(1000, 2001, 2.0)


# --- one memory however the config is named ---------------------------------------------------


def test_one_config_named_three_ways_shares_one_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative CLIMB_CONFIG, an absolute one and `climb --config` give the same settings and
    shard fingerprints, so work done under one is current under the others."""
    import os

    import dagster as dg

    from climb_assets.cli.runner import run_pipeline, shard_is_current
    from climb_assets.definitions import build_definitions
    from climb_assets.defs.graph import Stage
    from climb_assets.defs.shard_state import shard_input_fingerprint
    from climb_assets_tests.conftest import small_settings, write_jsonl

    project = tmp_path / "project"
    write_jsonl([{"id": "a", "text": "The river runs to the sea."}], project / "corpus/a.jsonl")
    config = small_settings(project / "corpus", project / "out").model_dump(mode="json")
    config |= {"output_dir": "out", "corpus": config["corpus"] | {"path": "corpus"}}
    (project / "climb.yaml").write_text(yaml.safe_dump(config))

    monkeypatch.chdir(project)
    monkeypatch.setenv("CLIMB_CONFIG", "climb.yaml")
    ways = {"relative CLIMB_CONFIG": load_settings()}
    monkeypatch.setenv("CLIMB_CONFIG", str(project / "climb.yaml"))
    ways["absolute CLIMB_CONFIG"] = load_settings()
    monkeypatch.chdir(tmp_path)  # from another folder, relative to it
    monkeypatch.setenv("CLIMB_CONFIG", "project/climb.yaml")
    ways["CLIMB_CONFIG from the parent"] = load_settings()
    monkeypatch.chdir(project)
    monkeypatch.delenv("CLIMB_CONFIG")
    assert main(["--config", "climb.yaml", "config", "show"]) == 0
    assert os.environ["CLIMB_CONFIG"] == str(project / "climb.yaml")  # resolved once, for all
    ways["--config"] = load_settings()

    assert {s.corpus.path for s in ways.values()} == {project / "corpus"}
    assert len({s.fingerprint() for s in ways.values()}) == 1, ways
    assert len({shard_input_fingerprint(s, "a.jsonl") for s in ways.values()}) == 1

    first = ways["relative CLIMB_CONFIG"]
    documents = (Stage(("corpus_documents",), "shards"),)
    with dg.instance_for_test() as instance:
        run_pipeline(build_definitions(first), first, instance, documents, echo=lambda _: None)
        for way, settings in ways.items():
            assert shard_is_current(instance, documents[0], "a.jsonl", settings), way


def test_a_config_file_that_is_a_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLIMB_CONFIG", raising=False)
    (tmp_path / "climb.yaml").mkdir()
    assert main(["--config", str(tmp_path / "climb.yaml"), "config", "show"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "climb.yaml is a directory, not a YAML file" in err, err


def test_files_with_a_utf8_bom_just_work(tmp_path: Path) -> None:
    from climb_assets.cli.preflight import check_targets

    target = tmp_path / "t.jsonl"
    target.write_bytes(b'\xef\xbb\xbf{"text": "hello world"}\n')
    config = tmp_path / "climb.yaml"
    config.write_bytes(b"\xef\xbb\xbfseed: 7\ntargets: [{name: t, kind: text, path: t.jsonl}]\n")
    settings = load_settings(config)
    assert settings.seed == 7 and settings.targets[0].path == target
    check_targets(settings)
