"""The artifact store: file names on disk stay what earlier runs wrote, and the catalog's views
are the store's own paths."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from climb_assets.cli.catalog import VIEWS
from climb_assets.store import POOL_MANIFEST, Layout, seed_repeats, table_globs

# What the output folder held before the store owned the names: a rename would orphan old runs.
ON_DISK = {
    "documents": "documents/*.parquet",
    "rejects": "rejects/*.parquet",
    "document_index": "document_index.parquet",
    "assignments": "assignments/*.parquet",
    "cluster_profiles": "clusters/profiles.parquet",
    "super_cluster_map": "clusters/super_cluster_map.parquet",
    "super_clusters": "clusters/super_clusters.parquet",
    "proxy_runs": "bootstrap/*/runs.parquet",
    "loss_curves": "bootstrap/*/loss_curves.parquet",
    "climbmix": "climbmix/data-*.parquet",
}


def test_catalog_views_are_the_store_tables() -> None:
    assert table_globs() == ON_DISK
    assert VIEWS == ON_DISK


def test_iteration_and_evaluation_file_names() -> None:
    from climb_assets.core.search.proxy_pool import MANIFEST

    layout = Layout(Path("out"))
    iteration = Path("out/bootstrap/iter-002")
    assert layout.runs("iter-002") == iteration / "runs.parquet"
    assert layout.loss_curves("iter-002") == iteration / "loss_curves.parquet"
    assert layout.seed_repeats("iter-002") == iteration / "seed_repeats.parquet"
    assert layout.predictor("iter-002") == iteration / "predictor"
    assert layout.iteration_summary("iter-002") == iteration / "summary.json"
    assert layout.evaluation_summary == Path("out/evaluation/summary.json")
    assert layout.dataset_card == Path("out/climbmix/README.md")
    assert POOL_MANIFEST == MANIFEST
    assert layout.proxy_pool_manifest == Path("out/proxy_pool") / MANIFEST


def test_dataset_shards_and_seed_repeats_read_what_exists(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert layout.dataset_shards() == [] and seed_repeats(layout, 2) is None
    layout.dataset.mkdir()
    for name in ("data-00001.parquet", "data-00000.parquet", "README.md"):
        (layout.dataset / name).touch()
    assert [p.name for p in layout.dataset_shards()] == ["data-00000.parquet", "data-00001.parquet"]
    layout.iteration("iter-002").mkdir(parents=True)
    pairs = pl.DataFrame({"candidate_id": [1], "score": [0.5], "repeat_score": [0.4]})
    pairs.write_parquet(layout.seed_repeats("iter-002"))
    found = seed_repeats(layout, 2)
    assert found is not None and found.equals(pairs)


def test_asset_modules_import_no_other_asset_module() -> None:
    """Shared helpers live in the store, shard_state, metadata or core: a stage reads its inputs
    from disk, never from another stage's module (lazy imports inside functions count too)."""
    import ast

    import climb_assets.defs.assets as assets

    for path in sorted(Path(assets.__file__).parent.glob("*.py")):
        imported = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                imported += [a.name for a in node.names]
        assert not [m for m in imported if m.startswith("climb_assets.defs.assets")], path.name


def test_a_missing_iteration_is_a_plain_error_naming_what_to_materialize(tmp_path: Path) -> None:
    from climb_assets.store import MissingArtifact, iteration_runs, read_runs

    layout = Layout(tmp_path)
    with pytest.raises(MissingArtifact, match="Materialize bootstrap_iteration iter-001 first"):
        iteration_runs(layout, 2)
    with pytest.raises(FileNotFoundError, match="materialize bootstrap_iteration iter-003"):
        read_runs(layout, "iter-003")
