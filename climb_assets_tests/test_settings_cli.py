"""Settings from YAML, and the `climb` command's config and error paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from climb_assets.cli import main
from climb_assets.run_plan import describe_run
from climb_assets.settings import ConfigWarning, Settings, load_settings


def test_defaults_serve_the_bundled_sample() -> None:
    settings = Settings()
    assert settings.corpus.path == Path("data/corpus")
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
    assert Settings().targets[0].path == Path("data/targets/held_out_text.jsonl")  # cwd-relative


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


def test_readme_documents_every_setting() -> None:
    from climb_assets.settings_doc import settings_reference

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [line for line in settings_reference().splitlines() if line not in readme]
    assert not missing, (
        "README's settings table is stale; regenerate it with "
        "`python -m climb_assets.settings_doc`:\n" + "\n".join(missing)
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
