from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from climb_assets.core.predictor import Predictor
from climb_assets.predictor_cli import main

TARGET = np.array([0.4, 0.3, 0.1, 0.1, 0.1])
COLUMNS = ["mix_web", "mix_code", "mix_books", "mix_news", "mix_wiki"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 past runs: weights under user-chosen names, an accuracy and a loss column."""
    weights = np.random.default_rng(0).dirichlet(np.ones(len(TARGET)), 40)
    distance = ((weights - TARGET) ** 2).sum(axis=1)
    table = pl.DataFrame({name: weights[:, j] for j, name in enumerate(COLUMNS)})
    table = table.with_columns(
        run=pl.Series([f"run-{i}" for i in range(40)]),
        accuracy=pl.Series(0.6 - distance),
        loss=pl.Series(2.0 + 3 * distance),
    )
    path = tmp_path_factory.mktemp("runs") / "runs.csv"
    table.write_csv(path)
    return path


def _cli(*argv: str | Path) -> int:
    return main(["predictor", *map(str, argv)])


def _with_rows_changed(runs: Path, tmp_path: Path, **changes: object) -> Path:
    """A copy of the runs table with cells set: changes like mix_web=(row_index, value)."""
    table = pl.read_csv(runs)
    for column, (row, value) in changes.items():
        values = table[column].to_list()
        values[row] = value
        table = table.with_columns(pl.Series(column, values, dtype=pl.Float64))
    path = tmp_path / "changed.csv"
    table.write_csv(path)
    return path


def test_cv_reports_a_high_spearman(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("cv", runs, "--weights", "mix_*", "--score", "accuracy", "--format", "json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["spearman"] > 0.7 and result["rows"] == 40 and result["folds"] == 5


def test_fit_then_predict_round_trip(runs: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    assert (
        _cli("fit", runs, "--weights", "mix_*", "--score", "loss", "--minimize", "--out", model)
        == 0
    )
    predictor = Predictor.load(model)
    assert predictor.weight_columns == COLUMNS and predictor.maximize is False
    assert predictor.info["score_columns"] == ["loss"]
    out = tmp_path / "predicted.parquet"
    assert _cli("predict", "--model", model, "--mixtures", runs, "--out", out) == 0
    predicted = pl.read_parquet(out)
    assert predicted.columns[-1] == "predicted" and predicted["run"].to_list()[0] == "run-0"
    expected = predictor.predict(predicted.select(COLUMNS).to_numpy())
    np.testing.assert_allclose(predicted["predicted"].to_numpy(), expected)


def test_weighted_objective_equals_a_precombined_column(runs: Path, tmp_path: Path) -> None:
    combined = pl.read_csv(runs).with_columns(objective=pl.col("accuracy") - 0.5 * pl.col("loss"))
    combined.write_csv(tmp_path / "combined.csv")
    weighted, single = tmp_path / "weighted", tmp_path / "single"
    common = ["--weights", "mix_web,mix_code,mix_books,mix_news,mix_wiki", "--maximize"]
    scores = [
        "--score",
        "accuracy",
        "--score",
        "loss",
        "--score-weight",
        "1",
        "--score-weight",
        "-0.5",
    ]
    assert _cli("fit", runs, *common, *scores, "--out", weighted) == 0
    assert (
        _cli("fit", tmp_path / "combined.csv", *common, "--score", "objective", "--out", single)
        == 0
    )
    table = pl.read_csv(runs).select(COLUMNS).to_numpy()
    np.testing.assert_allclose(
        Predictor.load(weighted).predict(table), Predictor.load(single).predict(table), atol=1e-9
    )


def test_propose_moves_toward_the_best_region(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["propose", runs, "--weights", "mix_*", "--score", "loss", "--minimize"]
    assert _cli(*argv, "--pool-size", "4000", "--top-k", "16", "--format", "json") == 0
    result = json.loads(capsys.readouterr().out)
    proposed = np.array([result["weights"][name] for name in COLUMNS])
    assert proposed.sum() == pytest.approx(1.0) and result["direction"] == "minimize"
    table = pl.read_csv(runs).select(COLUMNS).to_numpy()
    assert np.linalg.norm(proposed - TARGET) < np.linalg.norm(table - TARGET, axis=1).mean() / 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cv", "{runs}", "--weights", "x_*"], "matches no column; available columns: .*mix_web"),
        (
            ["cv", "{runs}", "--weights", "mix_*", "--score", "acc"],
            r"unknown score column\(s\) \['acc'\]",
        ),
        (["cv", "{runs}", "--weights", "mix_*", "--score", "run"], "'run' is String, not numeric"),
        (
            ["fit", "{runs}", "--weights", "mix_*", "--score", "loss", "--out", "m"],
            "--maximize or --minimize",
        ),
        (
            [
                "cv",
                "{runs}",
                "--weights",
                "mix_*",
                "--score",
                "loss",
                "--score-weight",
                "1",
                "--score-weight",
                "2",
            ],
            "2 --score-weight for 1 --score",
        ),
        (["cv", "{runs}.txt"], "does not exist"),
    ],
)
def test_bad_arguments_are_explained(
    runs: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(*(arg.format(runs=runs) for arg in argv)) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mix_web": (6, 0.9)}, r"row 7: weights .* sum to"),
        ({"mix_code": (2, -0.1)}, "row 3, column 'mix_code'.*not non-negative"),
        ({"accuracy": (4, None)}, "row 5, column 'accuracy': score is missing"),
    ],
)
def test_bad_rows_are_named(
    runs: Path, tmp_path: Path, changes: dict, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _with_rows_changed(runs, tmp_path, **changes)
    assert _cli("cv", path, "--weights", "mix_*", "--score", "accuracy") == 2
    assert re.search(message, capsys.readouterr().err)


def test_too_few_rows_is_an_error(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pl.read_csv(runs).head(3).write_parquet(tmp_path / "three.parquet")
    assert _cli("cv", tmp_path / "three.parquet", "--weights", "mix_*", "--score", "loss") == 2
    assert "has 3 row(s); `cv` needs at least 4" in capsys.readouterr().err


def test_module_entry_point_documents_every_option() -> None:
    command = [sys.executable, "-m", "climb_assets.predictor_cli", "predictor", "propose", "--help"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    for option in (
        "--weights",
        "--score",
        "--score-weight",
        "--minimize",
        "--top-k",
        "--pool-size",
    ):
        assert option in done.stdout
