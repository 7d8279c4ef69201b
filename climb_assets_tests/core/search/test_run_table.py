from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from climb_assets.core.search.predictor import fit_predictor
from climb_assets.core.search.run_table import (
    MAX_LISTED_COLUMNS,
    RunTable,
    RunTableError,
    RunTableSource,
    load_run_table,
    no_column,
    read_table,
    reading_info,
    resolve_weight_columns,
    score_mixtures,
    validated_weights,
    weighted_objective,
    write_table,
)
from climb_assets.settings import PredictorSettings

WEIGHTS = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])


def _runs() -> pl.DataFrame:
    """Four runs: w_* weights, a run id, an accuracy and a loss."""
    return pl.DataFrame({f"w_{j}": WEIGHTS[:, j] for j in range(3)}).with_columns(
        run=pl.Series(["a", "b", "c", "d"]),
        score=pl.Series([0.1, 0.2, 0.3, 0.4]),
        loss=pl.Series([4.0, 3.0, 2.0, 1.0]),
    )


@pytest.fixture
def runs_csv(tmp_path: Path) -> Path:
    path = tmp_path / "runs.csv"
    _runs().write_csv(path)
    return path


@pytest.mark.parametrize("name", ["runs.csv", "runs.tsv", "runs.parquet", "runs.pq"])
def test_tables_round_trip_by_extension(tmp_path: Path, name: str) -> None:
    write_table(_runs(), tmp_path / name)
    assert read_table(tmp_path / name).equals(_runs())


def test_unknown_missing_and_unreadable_tables(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv does not exist"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "runs.xlsx").write_text("x")
    with pytest.raises(RunTableError, match=r"unknown table type '\.xlsx'; use .csv, .tsv or"):
        read_table(tmp_path / "runs.xlsx")
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(RunTableError, match="broken.parquet: not a readable table: "):
        read_table(tmp_path / "broken.parquet")
    with pytest.raises(RunTableError, match=r"--out .*out.xlsx: unknown table type '\.xlsx'"):
        write_table(_runs(), tmp_path / "out.xlsx")
    assert issubclass(RunTableError, ValueError)


def test_weight_columns_from_names_and_globs_in_table_order() -> None:
    available = ["mix_b", "run", "mix_a", "mix_c"]
    assert resolve_weight_columns("mix_*", available) == ["mix_b", "mix_a", "mix_c"]
    assert resolve_weight_columns("mix_c, mix_*", available) == ["mix_c", "mix_b", "mix_a"]
    with pytest.raises(RunTableError) as error:
        resolve_weight_columns("mix_a,mix_d", available, "--weight-columns")
    assert str(error.value) == (
        "--weight-columns: no column 'mix_d'; did you mean 'mix_c' or 'mix_b' or 'mix_a'?"
    )
    with pytest.raises(RunTableError, match=r"^--weights 'x_\*' matches no column; the colu"):
        resolve_weight_columns("x_*", available)
    with pytest.raises(RunTableError, match=r"selects \['mix_a'\]: a mixture needs at least 2"):
        resolve_weight_columns("mix_a", available)


def test_a_missing_column_is_near_matched_or_a_few_are_listed() -> None:
    assert no_column("losss", ["loss", "run"]) == "no column 'losss'; did you mean 'loss'?"
    # 'mix_books' is 0.625 similar to 'mix_cod': under NEAR_MATCH, so not offered.
    assert "did you mean 'mix_code'?" in no_column("mix_cod", ["mix_books", "mix_code"])
    assert "'mix_books'" not in no_column("mix_cod", ["mix_books", "mix_code"])
    many = [f"extra_{i}" for i in range(10)]
    listed = no_column("zzz", many)
    assert listed.startswith("no column 'zzz'; the columns are 'extra_0', 'extra_1'")
    assert listed.endswith(f"and {10 - MAX_LISTED_COLUMNS} more")


def test_one_table_default_columns_and_a_weighted_objective(runs_csv: Path) -> None:
    table = load_run_table(RunTableSource(table=runs_csv))
    assert table.weight_columns == ["w_0", "w_1", "w_2"] and table.score_columns == ["score"]
    np.testing.assert_allclose(table.weights, WEIGHTS)
    source = RunTableSource(table=runs_csv, score=["score", "loss"], score_weight=[1.0, -0.5])
    combined = load_run_table(source)
    np.testing.assert_allclose(combined.objective, [-1.9, -1.3, -0.7, -0.1])
    assert combined.score_weights == [1.0, -0.5] and combined.keys is None
    with pytest.raises(RunTableError, match="^1 --score-weight for 2 --score: give one per"):
        load_run_table(RunTableSource(table=runs_csv, score=["score", "loss"], score_weight=[1]))
    with pytest.raises(RunTableError, match="--weights and --weight-columns both name columns"):
        load_run_table(RunTableSource(table=runs_csv, weights="w_*", weight_columns="w_*"))


def test_two_files_join_on_the_key_and_note_what_is_left_out(tmp_path: Path) -> None:
    runs = _runs()
    runs.select("run", "w_0", "w_1", "w_2").write_parquet(tmp_path / "w.parquet")
    extra = pl.DataFrame({"run": ["z"], "loss": [9.0]})
    pl.concat([runs.select("run", "loss").reverse(), extra]).write_csv(tmp_path / "s.csv")
    notes: list[str] = []
    source = RunTableSource(
        weights_file=tmp_path / "w.parquet", scores=tmp_path / "s.csv", key="run", score=["loss"]
    )
    table = load_run_table(source, notes.append)
    assert table.keys == ["a", "b", "c", "d"] and table.weight_columns == ["w_0", "w_1", "w_2"]
    np.testing.assert_allclose(table.objective, [4.0, 3.0, 2.0, 1.0])
    assert table.source == f"{tmp_path / 'w.parquet'} + {tmp_path / 's.csv'}"
    assert notes == [
        f"0 run(s) of {tmp_path / 'w.parquet'} have no score and 1 of {tmp_path / 's.csv'} no "
        "weights; they are left out"
    ]
    # The weights file named by --weights still works, with a note.
    notes.clear()
    old = replace(source, weights_file=None, weights=str(tmp_path / "w.parquet"))
    assert load_run_table(old, notes.append).keys == table.keys
    assert notes[0] == f"--weights {old.weights} as a file is deprecated; use --weights-file"


def test_two_file_mistakes_are_named(runs_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(RunTableError, match=r"^two files \(no TABLE\) also need --scores FILE$"):
        load_run_table(RunTableSource(weights_file=runs_csv, key="run"))
    with pytest.raises(RunTableError, match="^give TABLE .* or --weights-file FILE --scores"):
        load_run_table(RunTableSource())
    with pytest.raises(RunTableError, match="^give either TABLE or --weights-file FILE"):
        load_run_table(RunTableSource(table=runs_csv, key="run"))
    doubled = tmp_path / "doubled.csv"
    pl.concat([_runs(), _runs().head(1)]).write_csv(doubled)
    with pytest.raises(RunTableError, match="--key 'run' value 'a' appears more than once"):
        load_run_table(RunTableSource(weights_file=doubled, scores=runs_csv, key="run"))
    with pytest.raises(RunTableError, match="--key: no column 'runn'; did you mean 'run'"):
        load_run_table(RunTableSource(weights_file=runs_csv, scores=runs_csv, key="runn"))


def test_weights_within_tolerance_are_renormalized_else_named(tmp_path: Path) -> None:
    df = pl.DataFrame({"a": [0.5, 60.0], "b": [0.4999, 40.0]})
    path = tmp_path / "w.csv"
    with pytest.raises(RunTableError) as error:
        validated_weights(df, ["a", "b"], 1e-3, path, renormalize=False)
    assert str(error.value).startswith(
        f"{path}: row 2: weights ['a', 'b'] sum to 100, not 1 (--tolerance 0.001); 1 row(s) "
        "affected. Pass --renormalize"
    )
    np.testing.assert_allclose(
        validated_weights(df, ["a", "b"], 1e-3, path, renormalize=True).sum(axis=1), 1.0
    )
    zero = pl.DataFrame({"a": [0.0], "b": [0.0]})
    with pytest.raises(RunTableError, match="row 1: weights .* are all 0, nothing to renorm"):
        validated_weights(zero, ["a", "b"], 1e-3, path, renormalize=True)
    negative = pl.DataFrame({"a": [1.2], "b": [-0.2]})
    with pytest.raises(RunTableError, match="row 1, column 'b': weight -0.2 is not non-neg"):
        validated_weights(negative, ["a", "b"], 1e-3, path, renormalize=False)


def test_scores_must_be_numeric_and_finite(tmp_path: Path) -> None:
    df = pl.DataFrame({"score": [1.0, None], "run": ["a", "b"]})
    path = tmp_path / "s.csv"
    with pytest.raises(RunTableError) as error:
        weighted_objective(df, ["score"], [1.0], path)
    assert str(error.value) == (
        f"{path}: row 2, column 'score': score is missing or not finite (1 row(s) affected); "
        "drop or fix those runs"
    )
    with pytest.raises(RunTableError, match="score column 'run' is String, not numeric"):
        weighted_objective(df, ["run"], [1.0], path)
    with pytest.raises(RunTableError, match="--score: no column 'scor'; did you mean 'score'"):
        weighted_objective(df, ["scor"], [1.0], path)


def test_require_rows_names_the_action() -> None:
    table = RunTable("runs.csv", ["a", "b"], WEIGHTS[:2, :2], ["score"], [1.0], np.zeros(2))
    table.require_rows(2, "fit")
    with pytest.raises(RunTableError, match=r"^runs.csv has 2 row\(s\); `cv` needs at least 4$"):
        table.require_rows(4, "cv")


def test_score_mixtures_reads_them_as_the_fit_read_the_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(3), 12)
    percent = pl.DataFrame({f"w_{j}": 100 * weights[:, j] for j in range(3)})
    percent.with_columns(score=pl.Series(weights[:, 0])).write_csv(tmp_path / "runs.csv")
    source = RunTableSource(table=tmp_path / "runs.csv", renormalize=True)
    table = load_run_table(source)
    settings = PredictorSettings(rounds=5, ensemble_size=2)
    predictor = fit_predictor(
        table.weights, table.objective, 0, True, table.weight_columns, settings
    )
    predictor.info |= reading_info(table, source)
    assert predictor.info["renormalize"] is True and predictor.info["score_columns"] == ["score"]
    scored = score_mixtures(predictor, tmp_path / "runs.csv", tmp_path / "model")
    assert scored.columns[-2:] == ["predicted", "predicted_spread"]
    np.testing.assert_allclose(scored.select("w_0", "w_1", "w_2").to_numpy(), weights)
    np.testing.assert_allclose(scored["predicted"].to_numpy(), predictor.predict(weights))
    with pytest.raises(RunTableError, match="sum to 100"):
        score_mixtures(predictor, tmp_path / "runs.csv", tmp_path / "model", renormalize=False)
    percent.drop("w_2").write_csv(tmp_path / "partial.csv")
    with pytest.raises(RunTableError) as error:
        score_mixtures(predictor, tmp_path / "partial.csv", tmp_path / "model")
    assert str(error.value) == (
        f"{tmp_path / 'partial.csv'}: missing weight column(s) ['w_2']; the model in "
        f"{tmp_path / 'model'} scores mixtures of ['w_0', 'w_1', 'w_2']"
    )
