from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from climb_assets.cli.main import build_parser, main
from climb_assets.cli.options import OptionError, settings_from_args
from climb_assets.core.search.predictor import Predictor
from climb_assets.core.search.run_table import MAX_LISTED_COLUMNS
from climb_assets.settings import PredictorSettings, SearchSettings

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


def _fails(capsys: pytest.CaptureFixture[str], action: str, *argv: str | Path) -> str:
    """The error of `climb predictor ACTION ARGV`: it exits 1 and its last line on stderr (notes
    may come before) is 'climb: error: predictor ACTION: ...', as for every climb command; the
    part after the prefix is returned."""
    assert _cli(action, *argv) == 1
    *notes, line = capsys.readouterr().err.splitlines()
    assert all(note.startswith("note: ") for note in notes), notes
    prefix = f"climb: error: predictor {action}: "
    assert line.startswith(prefix), line
    return line.removeprefix(prefix)


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
    assert predicted.columns[-2:] == ["predicted", "predicted_spread"]
    assert predicted["run"].to_list()[0] == "run-0"
    table = predicted.select(COLUMNS).to_numpy()
    np.testing.assert_allclose(predicted["predicted"].to_numpy(), predictor.predict(table))
    spread = predicted["predicted_spread"].to_numpy()
    np.testing.assert_allclose(spread, predictor.predict_spread(table))
    assert (spread > 0).any()


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


def test_propose_min_weight_zeroes_slivers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Best on two groups only: the mean of the top-k leaves slivers on the other three.
    weights = np.random.default_rng(1).dirichlet(np.ones(5), 80)
    loss = 2.0 + 3 * ((weights - np.array([0.6, 0.4, 0, 0, 0])) ** 2).sum(axis=1)
    table = pl.DataFrame({f"w_{j}": weights[:, j] for j in range(5)}).with_columns(loss=loss)
    table.write_csv(tmp_path / "runs.csv")
    argv = ["propose", tmp_path / "runs.csv", "--score", "loss", "--minimize"]
    argv += ["--pool-size", "2000", "--format", "json"]
    proposed = {}
    for floor in ("0", "0.05"):
        assert _cli(*argv, "--min-weight", floor) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["method"] == "region mean" and not result["kept_slivers"]
        proposed[floor] = np.array(list(result["weights"].values()))
    assert (proposed["0"] > 0).sum() > (proposed["0.05"] > 0).sum()
    assert ((proposed["0.05"] == 0) | (proposed["0.05"] >= 0.05)).all()
    error = _fails(capsys, *argv, "--min-weight", "1")
    assert error == "--min-weight 1.0: must be < 1"


def test_cli_defaults_follow_the_settings() -> None:
    search, predictor = SearchSettings(), PredictorSettings()
    propose = build_parser().parse_args(["predictor", "propose", "t.csv"])
    assert (propose.top_k, propose.pool_size) == (search.final_top_k, search.candidate_pool_size)
    assert propose.min_weight == search.final_min_weight
    assert propose.region_radius == search.final_region_radius
    assert propose.trust_radius == search.final_trust_radius
    assert (propose.rounds, propose.max_rounds) == (predictor.rounds, predictor.max_rounds)
    assert (propose.num_leaves, propose.ensemble_size) == (
        predictor.num_leaves,
        predictor.ensemble_size,
    )
    assert propose.learning_rate == predictor.learning_rate
    assert propose.smooth_base == predictor.smooth_base
    assert build_parser().parse_args(["predictor", "cv", "t.csv"]).folds == search.cv_folds


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--num-leaves", "1"], "--num-leaves 1: must be >= 2"),
        (["--learning-rate", "0"], "--learning-rate 0.0: must be > 0"),
        (["--rounds", "0"], "--rounds 0: must be >= 1"),
        (["--max-rounds", "0"], "--max-rounds 0: must be >= 1"),
        (["--pool-size", "0"], "--pool-size 0: must be >= 1"),
        (["--top-k", "0"], "--top-k 0: must be >= 1"),
        (["--region-radius", "1.5"], "--region-radius 1.5: must be <= 1"),
        (["--trust-radius", "-1"], "--trust-radius -1.0: must be >= 0"),
        (
            ["--top-k", "0", "--min-weight", "-0.1"],
            "--top-k 0: must be >= 1; --min-weight -0.1: must be >= 0",
        ),
    ],
)
def test_options_are_checked_by_the_settings_models(
    runs: Path, options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["propose", runs, "--weights", "mix_*", "--score", "loss", "--minimize", *options]
    assert _fails(capsys, *argv) == message


def test_settings_from_args_names_each_refused_option() -> None:
    options = {
        "num_leaves": "--num-leaves",
        "learning_rate": "--learning-rate",
        "smooth_base": "--no-smooth-base",
    }
    args = argparse.Namespace(num_leaves=4, learning_rate=0.2, smooth_base=False)
    settings = settings_from_args(PredictorSettings, args, options)
    assert (settings.num_leaves, settings.learning_rate, settings.smooth_base) == (4, 0.2, False)
    bad = argparse.Namespace(num_leaves=1, learning_rate=0.0, smooth_base=True)
    with pytest.raises(OptionError) as error:
        settings_from_args(PredictorSettings, bad, options, {"--num-leaves": "a tree splits"})
    assert str(error.value) == (
        "--learning-rate 0.0: must be > 0; --num-leaves 1: must be >= 2 (a tree splits)"
    )
    design = argparse.Namespace(design="grid")
    with pytest.raises(OptionError) as error:  # not a range: pydantic's own words
        settings_from_args(SearchSettings, design, {"initial_design": "--design"})
    assert str(error.value) == "--design grid: must be 'cover' or 'regmix'"


def test_usage_errors_stay_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predictor", "fit", "t.csv", "--minimize"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["cv", "{runs}", "--weights", "x_*"],
            r"'x_\*' matches no column; the columns are .*mix_web",
        ),
        (
            ["cv", "{runs}", "--weights", "mix_*", "--score", "losss"],
            r"no column 'losss'; did you mean 'loss'\?",
        ),
        (
            ["cv", "{runs}", "--weights", "mix_web,mix_cod", "--score", "loss"],
            r"--weights: no column 'mix_cod'; did you mean 'mix_code'\?",
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
    assert re.search(message, _fails(capsys, *(arg.format(runs=runs) for arg in argv)))


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
    assert re.search(
        message, _fails(capsys, "cv", path, "--weights", "mix_*", "--score", "accuracy")
    )


def test_too_few_rows_is_an_error(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pl.read_csv(runs).head(3).write_parquet(tmp_path / "three.parquet")
    assert "has 3 row(s); `cv` needs at least 4" in _fails(
        capsys, "cv", tmp_path / "three.parquet", "--weights", "mix_*", "--score", "loss"
    )


def test_module_entry_point_documents_every_option() -> None:
    command = [sys.executable, "-m", "climb_assets.cli.predictor", "predictor", "propose", "--help"]
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


def test_module_entry_point_documents_the_new_options() -> None:
    command = [sys.executable, "-m", "climb_assets.cli.predictor", "predictor", "fit", "--help"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    for option in ("--scores", "--key", "--weight-columns", "--renormalize", "--tolerance"):
        assert option in done.stdout
    for option in ("--rounds", "--learning-rate", "--num-leaves", "--ensemble-size"):
        assert option in done.stdout


def _split_files(runs: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The runs as a weights file and a scores file keyed by run_id: scores in another order,
    with one extra run that has no weights."""
    table = pl.read_csv(runs).with_row_index("run_id")
    weights, scores = tmp_path / "weights.csv", tmp_path / "scores.parquet"
    table.select("run_id", *COLUMNS).write_csv(weights)
    extra = pl.DataFrame({"run_id": [999], "loss": [0.0], "accuracy": [1.0]})
    extra = extra.cast({"run_id": pl.UInt32})
    pl.concat([table.select("run_id", "loss", "accuracy").reverse(), extra]).write_parquet(scores)
    return weights, scores


def test_two_files_joined_on_a_key_equal_the_single_table(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, scores = _split_files(runs, tmp_path)
    joined = ["--weights-file", weights, "--scores", scores, "--key", "run_id", "--score", "loss"]
    assert _cli("cv", *joined, "--format", "json") == 0
    captured = capsys.readouterr()
    assert "1 of" in captured.err and "no weights; they are left out" in captured.err
    assert _cli("cv", runs, "--weights", "mix_*", "--score", "loss", "--format", "json") == 0
    assert json.loads(captured.out) == json.loads(capsys.readouterr().out)
    assert _cli("fit", *joined, "--minimize", "--out", tmp_path / "two") == 0
    assert _cli("fit", runs, "--weights", "mix_*", "--score", "loss", "--minimize", "--out",
                tmp_path / "one") == 0  # fmt: skip
    table = pl.read_csv(runs).select(COLUMNS).to_numpy()
    two, one = Predictor.load(tmp_path / "two"), Predictor.load(tmp_path / "one")
    assert two.weight_columns == COLUMNS
    np.testing.assert_array_equal(two.predict(table), one.predict(table))
    capsys.readouterr()
    assert _cli("propose", *joined, "--minimize", "--pool-size", "500", "--format", "json") == 0
    observed = json.loads(capsys.readouterr().out)["best_observed"]
    assert observed["key"] == str(int(np.argmin(pl.read_csv(runs)["loss"].to_numpy())))


def test_weights_file_given_as_weights_still_works_with_a_note(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, scores = _split_files(runs, tmp_path)
    argv = ["--scores", scores, "--key", "run_id", "--score", "loss", "--format", "json"]
    assert _cli("cv", "--weights-file", weights, *argv) == 0
    current = capsys.readouterr()
    assert "deprecated" not in current.err
    assert _cli("cv", "--weights", weights, *argv) == 0
    old = capsys.readouterr()
    assert f"--weights {weights} as a file is deprecated; use --weights-file" in old.err
    assert json.loads(old.out) == json.loads(current.out)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--key", "nope"], "--key: no column 'nope'"),
        ([], r"two files \(no TABLE\) also need --key COL \(the run id column both files share"),
        (["--key", "run_id", "--weight-columns", "mix_web"], "at least 2 columns"),
    ],
)
def test_two_file_problems_are_explained(
    runs: Path, tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    weights, scores = _split_files(runs, tmp_path)
    argv = ["--weights-file", weights, "--scores", scores, "--score", "loss", *extra]
    assert re.search(message, _fails(capsys, "cv", *argv))


def test_missing_table_or_files_say_what_is_needed(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "give TABLE (a CSV/Parquet of runs), or --weights-file FILE" in _fails(
        capsys, "cv", "--score", "loss"
    )
    weights, _ = _split_files(runs, tmp_path)
    assert "also need --scores FILE" in _fails(
        capsys, "cv", "--weights-file", weights, "--key", "run_id"
    )


def test_duplicate_keys_and_a_file_given_with_table_are_errors(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, scores = _split_files(runs, tmp_path)
    doubled = tmp_path / "doubled.csv"
    pl.concat([pl.read_csv(weights), pl.read_csv(weights).head(1)]).write_csv(doubled)
    argv = ["--scores", scores, "--key", "run_id", "--score", "loss"]
    assert "'run_id' value 0 appears more than once" in _fails(
        capsys, "cv", "--weights-file", doubled, *argv
    )
    assert "is a file, but --weights names columns" in _fails(
        capsys, "cv", runs, "--weights", weights, "--score", "loss"
    )
    assert "either TABLE or --weights-file" in _fails(
        capsys, "cv", runs, "--weights-file", weights, "--score", "loss"
    )


def test_renormalize_accepts_percentages(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    percent = tmp_path / "percent.csv"
    pl.read_csv(runs).with_columns(pl.col(COLUMNS) * 100).write_csv(percent)
    argv = ["--weights", "mix_*", "--score", "accuracy", "--format", "json"]
    error = _fails(capsys, "cv", percent, *argv)
    assert "sum to 100" in error and "--tolerance" in error and "--renormalize" in error
    assert _cli("cv", percent, *argv, "--renormalize") == 0
    renormalized = json.loads(capsys.readouterr().out)
    assert _cli("cv", runs, *argv) == 0
    assert renormalized == json.loads(capsys.readouterr().out)
    zero = _with_rows_changed(runs, tmp_path, mix_web=(0, 0.0))
    table = pl.read_csv(zero).with_columns([pl.lit(0.0).alias(c) for c in COLUMNS[1:]])
    table.head(1).vstack(pl.read_csv(runs).tail(10)).write_csv(tmp_path / "zero.csv")
    assert "row 1: weights" in _fails(capsys, "cv", tmp_path / "zero.csv", *argv, "--renormalize")


def test_fit_out_must_be_a_directory(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", runs, "--weights", "mix_*", "--score", "loss", "--minimize", "--out"]
    assert "looks like a file name" in _fails(capsys, *argv, tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()
    (tmp_path / "plain").write_text("not a model")
    assert "is an existing file" in _fails(capsys, *argv, tmp_path / "plain")
    assert (tmp_path / "plain").read_text() == "not a model"


def test_one_fold_is_an_error(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = _fails(capsys, "cv", runs, "--weights", "mix_*", "--score", "loss", "--folds", "1")
    assert error == (
        "--folds 1: must be >= 2 (leave-one-out is used automatically when rows are fewer "
        "than --folds)"
    )


def test_fit_does_not_cross_validate(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import climb_assets.core.search.predictor as predictor_module

    def forbidden(*args: object, **kwargs: object) -> float:
        raise AssertionError("fit ran cross-validation")

    monkeypatch.setattr(predictor_module, "cross_validated_spearman", forbidden)
    argv = ["fit", runs, "--weights", "mix_*", "--score", "loss", "--minimize"]
    assert _cli(*argv, "--out", tmp_path / "model") == 0
    assert "cv_spearman" not in Predictor.load(tmp_path / "model").info


def test_model_options_reach_the_predictor(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", runs, "--weights", "mix_*", "--score", "loss", "--minimize"]
    options = ["--rounds", "7", "--ensemble-size", "3", "--num-leaves", "4"]
    assert _cli(*argv, *options, "--learning-rate", "0.2", "--out", tmp_path / "model") == 0
    predictor = Predictor.load(tmp_path / "model")
    assert len(predictor.boosters) == 3
    assert all(booster.current_iteration() == 7 for booster in predictor.boosters)
    info = predictor.info
    assert (info["rounds"], info["round_selection"], info["members"]) == (7, "settings", 3)
    assert (info["num_leaves"], info["learning_rate"]) == (4, 0.2)
    assert info["smooth_base"] is True
    assert "3 models x 7 rounds" in capsys.readouterr().out
    assert _cli(*argv, "--no-smooth-base", "--out", tmp_path / "trees") == 0
    trees = Predictor.load(tmp_path / "trees")
    assert trees.info["smooth_base"] is False and trees.smooth is None
    error = _fails(capsys, *argv, "--ensemble-size", "0", "--out", tmp_path / "bad")
    assert error == "--ensemble-size 0: must be >= 1"


def test_propose_shows_the_best_observed_runs_prediction(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["propose", runs, "--weights", "mix_*", "--score", "loss", "--minimize"]
    assert _cli(*argv, "--pool-size", "2000", "--format", "json") == 0
    result = json.loads(capsys.readouterr().out)
    observed = result["best_observed"]
    assert result["predicted"] <= observed["predicted"]
    assert result["method"] in {"region mean", "best predicted", "best observed"}
    assert 1 <= result["region_size"] <= result["top_k"]
    assert observed["objective"] == pytest.approx(pl.read_csv(runs)["loss"].min())
    assert _cli(*argv, "--pool-size", "2000") == 0
    text = capsys.readouterr().out
    assert re.search(r"best observed run: row \d+, objective [\d.]+, predicted [\d.]+", text)
    assert f"{result['predicted']:.6g}" in text


def test_a_wrong_column_among_many_lists_only_a_few(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = pl.read_csv(runs).with_columns([pl.lit(0.0).alias(f"extra_{i}") for i in range(24)])
    wide.write_csv(tmp_path / "wide.csv")
    error = _fails(capsys, "cv", tmp_path / "wide.csv", "--weights", "mix_*", "--score", "zzz")
    assert "no column 'zzz'; the columns are 'mix_web'" in error
    assert error.count("'") == 2 * (MAX_LISTED_COLUMNS + 1)  # 'zzz' and six columns
    assert f"and {wide.width - MAX_LISTED_COLUMNS} more" in error


def test_predict_names_the_missing_weight_columns(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    argv = ["fit", runs, "--weights", "mix_*", "--score", "loss", "--minimize", "--rounds", "5"]
    assert _cli(*argv, "--out", model) == 0
    pl.read_csv(runs).drop("mix_news", "mix_wiki").write_csv(tmp_path / "partial.csv")
    capsys.readouterr()
    error = _fails(capsys, "predict", "--model", model, "--mixtures", tmp_path / "partial.csv")
    assert "missing weight column(s) ['mix_news', 'mix_wiki']" in error
    assert "unknown" not in error


def test_folds_is_an_option_of_cv_only(capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("fit", "propose"):
        with pytest.raises(SystemExit):
            main(["predictor", action, "--help"])
        assert "--folds" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["predictor", "cv", "--help"])
    assert "--folds" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["predictor", "fit", "t.csv", "--minimize", "--out", "m", "--folds", "3"])
    assert "unrecognized arguments: --folds" in capsys.readouterr().err


def test_predict_reuses_the_tolerance_and_renormalize_of_fit(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Rows summing to 0.98: accepted at fit by --tolerance 0.05, then by predict without it.
    short = tmp_path / "short.csv"
    pl.read_csv(runs).with_columns(pl.col(COLUMNS) * 0.98).write_csv(short)
    argv = ["fit", short, "--weights", "mix_*", "--score", "loss", "--minimize", "--rounds", "5"]
    assert _cli(*argv, "--tolerance", "0.05", "--out", tmp_path / "loose") == 0
    assert Predictor.load(tmp_path / "loose").info["tolerance"] == 0.05
    assert _cli("predict", "--model", tmp_path / "loose", "--mixtures", short) == 0
    capsys.readouterr()
    strict = ["predict", "--model", tmp_path / "loose", "--mixtures", short, "--tolerance", "1e-3"]
    assert "--tolerance 0.001" in _fails(capsys, *strict)
    # Percentages: --renormalize at fit is remembered too; --no-renormalize overrides it.
    percent = tmp_path / "percent.csv"
    pl.read_csv(runs).with_columns(pl.col(COLUMNS) * 100).write_csv(percent)
    argv[1] = percent
    assert _cli(*argv, "--renormalize", "--out", tmp_path / "percent") == 0
    assert _cli("predict", "--model", tmp_path / "percent", "--mixtures", percent) == 0
    capsys.readouterr()
    off = ["predict", "--model", tmp_path / "percent", "--mixtures", percent, "--no-renormalize"]
    assert "sum to 100" in _fails(capsys, *off)


def test_predict_renormalize_writes_the_weights_it_scored(runs: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    argv = ["fit", runs, "--weights", "mix_*", "--score", "loss", "--minimize", "--rounds", "5"]
    assert _cli(*argv, "--out", model) == 0
    percent = tmp_path / "percent.csv"
    original = pl.read_csv(runs)
    original.with_columns(pl.col(COLUMNS) * 100).write_csv(percent)
    out = tmp_path / "predicted.csv"
    predict = ["predict", "--model", model, "--mixtures", percent, "--out", out]
    assert _cli(*predict, "--renormalize") == 0
    written = pl.read_csv(out)
    weights = written.select(COLUMNS).to_numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(weights, original.select(COLUMNS).to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(written["predicted"], Predictor.load(model).predict(weights))


def test_propose_help_and_output_agree_on_min_weight(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["predictor", "propose", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "unless the predictor scores the mixture higher with them" in help_text
    argv = ["propose", runs, "--weights", "mix_*", "--score", "loss", "--minimize"]
    assert _cli(*argv, "--pool-size", "1000", "--min-weight", "0.2", "--format", "json") == 0
    result = json.loads(capsys.readouterr().out)
    weights = np.array(list(result["weights"].values()))
    # The target puts 0.1 on three groups: the predictor prefers them to a 0.2 floor.
    assert result["kept_slivers"] and ((weights > 0) & (weights < 0.2)).any()
    assert _cli(*argv, "--pool-size", "1000", "--min-weight", "0.2") == 0
    assert "weights under --min-weight 0.2 kept: the predictor scores" in capsys.readouterr().out


def _capped_runs(path: Path) -> Path:
    """Runs that never put more than 0.12 on w_0, and a loss falling steadily with it: the
    predictor's best lies far outside the runs (RegMix's HackerNews case)."""
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.ones(5), 120)
    weights[:, 0] = rng.uniform(0, 0.12, 120)
    weights[:, 1:] *= ((1 - weights[:, 0]) / weights[:, 1:].sum(axis=1))[:, None]
    loss = 3 - 2 * weights[:, 0] + 0.5 * ((weights[:, 1:] - 0.22) ** 2).sum(axis=1)
    table = pl.DataFrame({f"w_{j}": weights[:, j] for j in range(5)})
    table.with_columns(loss=loss + rng.normal(0, 0.005, 120)).write_csv(path)
    return path


def test_propose_stays_inside_the_runs_and_reports_the_best_outside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _capped_runs(tmp_path / "capped.csv")
    argv = ["propose", runs, "--score", "loss", "--minimize", "--pool-size", "3000"]
    assert _cli(*argv, "--format", "json") == 0
    result = json.loads(capsys.readouterr().out)
    trust = result["trust_region"]
    high = trust["weight_margin"] + 0.12
    assert result["weights"]["w_0"] <= high and trust["chosen"]["inside"]
    best = trust["best_predicted"]
    assert trust["best_predicted_outside"] and best["distance"] > trust["radius"]
    assert best["weights"]["w_0"] > 0.5 and "w_0" in best["weights_beyond_range"]
    assert best["predicted"] < result["predicted"]
    assert _cli(*argv) == 0
    text = capsys.readouterr().out
    outside = r"best predicted mixture \(predicted [\d.]+\) lies outside: [\d.]+ from the"
    assert re.search(outside + r" nearest run \(row \d+\); w_0 [\d.]+ outside \[0, 0.\d+\]", text)
    assert "chosen inside instead" in text
    assert _cli(*argv, "--allow-outside", "--format", "json") == 0
    flagged = json.loads(capsys.readouterr().out)
    assert flagged["weights"]["w_0"] > 0.5 and not flagged["trust_region"]["chosen"]["inside"]
    assert _cli(*argv, "--trust-radius", "0", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["trust_region"] is None
