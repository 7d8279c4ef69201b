"""`climb run` tells a failure in one line on stderr, naming the cause and where the full log is;
the UI gets the same line as the step's Failure description. Each case is a real small file
that fails at the cheapest point: before any step, or in the first (ingest) step."""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from climb_assets.cli.main import main
from climb_assets.defs.failures import one_line_failures, step_failure
from climb_assets_tests.conftest import PROJECT, small_settings, write_jsonl

ROWS = [{"id": f"d{i}", "text": f"The river number {i} runs to the sea."} for i in range(20)]
Corpus = Callable[[Path], None]
NO_TELEMETRY = "telemetry:\n  enabled: false\n"  # else Dagster prints a notice on stderr


def truncated_gzip(corpus: Path) -> None:
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS).encode())
    (corpus / "a.jsonl.gz").write_bytes(data[: len(data) // 2])


def not_zstd(corpus: Path) -> None:
    (corpus / "a.jsonl.zst").write_text(json.dumps(ROWS[0]) + "\n")


def parquet_without_text(corpus: Path) -> None:
    pl.DataFrame(ROWS).rename({"text": "body"}).write_parquet(corpus / "a.parquet")


def plain(corpus: Path) -> None:
    write_jsonl(ROWS, corpus / "a.jsonl")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with its own Dagster instance; `climb` runs in it."""
    monkeypatch.delenv("CLIMB_CONFIG", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text(NO_TELEMETRY)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def climb_run(
    project: Path, make: Corpus, capsys: pytest.CaptureFixture[str], *argv: str, **changes: dict
) -> tuple[int, str, str]:
    """`climb run` on a corpus made by `make`, with settings `changes` (section -> values)."""
    corpus = project / "corpus"
    corpus.mkdir()
    make(corpus)
    config = small_settings(corpus, project / "out").model_dump(mode="json")
    for section, values in changes.items():
        config[section] |= values
    (project / "climb.yaml").write_text(yaml.safe_dump(config))
    code = main([*argv, "--config", str(project / "climb.yaml"), "run"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code: int, err: str, *says: str) -> None:
    assert code == 1 and err.count("\n") == 1 and err.startswith("climb: error: "), err
    for text in says:
        assert text in err, err


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (truncated_gzip, ["corpus_documents [a.jsonl.gz]: ", "a.jsonl.gz: cannot read gzip"]),
        (not_zstd, ["a.jsonl.zst: cannot read it", "zstd"]),
        (parquet_without_text, ["a.parquet", "no text column 'text' (columns: id, body)"]),
    ],
)
def test_an_unreadable_shard_is_one_line(
    project: Path, make: Corpus, says: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = climb_run(project, make, capsys)
    assert_one_line(code, err, *says)
    if "corpus_documents" in err:  # failed in a step: its log file and run are named
        log = Path(re.search(r"full log: (\S+);", err).group(1))
        assert log.parent == project / "out" / "logs" and "Stack Trace" in log.read_text()
        assert re.search(r"run [0-9a-f-]{36} in `dg dev`", err)


def test_the_ui_gets_the_cause_as_a_one_line_failure(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = climb_run(project, truncated_gzip, capsys)
    run_id = re.search(r"run ([0-9a-f-]{36})", err).group(1)
    with dg.DagsterInstance.get() as instance:
        failures = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    data = failures[0].dagster_event.step_failure_data
    description = data.user_failure_data.description
    assert "\n" not in description and "cannot read gzip-compressed JSONL" in description
    assert "EOFError" in data.user_failure_data.metadata["traceback"].value  # nothing lost


def test_debug_shows_the_failed_steps_traceback(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from climb_assets.cli.runner import StepFailed

    with pytest.raises(StepFailed):
        climb_run(project, truncated_gzip, capsys, "--debug")
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"embedding": {"model": "/no/such/encoder"}}, "embedding.model '/no/such/encoder'"),
        ({"embedding": {"device": "cuda:7"}}, "embedding.device: 'cuda:7'"),
    ],
)
def test_an_encoder_that_cannot_load_is_refused_before_any_step(
    project: Path, changes: dict, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if "device" in changes["embedding"] and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code, out, err = climb_run(project, plain, capsys, **changes)
    assert_one_line(code, err, says)
    assert "[1/" not in out  # no step ran


def test_a_corpus_path_that_is_a_file_is_one_line(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def corpus_file(corpus: Path) -> None:
        corpus.rmdir()
        corpus.write_text("not a folder\n")

    code, _, err = climb_run(project, corpus_file, capsys)
    assert_one_line(code, err, "corpus.path", "is a file, not a folder of shard files")


def test_a_text_field_absent_from_the_first_record_is_named_at_start(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from climb_assets.cli.preflight import text_field_warnings

    plain(project)
    settings = small_settings(project, project / "out")
    assert text_field_warnings(settings, ["a.jsonl"]) == []
    settings.corpus.text_field = "body"
    (warning,) = text_field_warnings(settings, ["a.jsonl"])
    assert "corpus.text_field 'body'" in warning and "(fields: id, text)" in warning


def sixty_documents(corpus: Path) -> None:
    write_jsonl(
        [
            {"id": f"d{i}", "text": f"The river {i} runs past hill {i % 7} to town {i % 5}."}
            for i in range(60)
        ],
        corpus / "a.jsonl",
    )


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        (
            {"clustering": {"min_cluster_docs": 1000}},
            "super_clusters: every one of 8 clusters was pruned: lower clustering.min_mean_quality",
        ),
        (
            {"clustering": {"target_super_clusters": 1}, "dataset": {"token_budget": 500}},
            "[iter-001]: 1 super-cluster(s) to mix: the search needs at least 2",
        ),
        (
            {"clustering": {"target_super_clusters": 2}, "dataset": {"token_budget": 10**9}},
            "dataset.token_budget=1,000,000,000 is more than the kept super-clusters can supply",
        ),
    ],
    ids=["every-cluster-pruned", "one-super-cluster", "budget-beyond-the-corpus"],
)
def test_a_corpus_that_cannot_be_searched_is_one_line(
    project: Path, changes: dict, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = climb_run(project, sixty_documents, capsys, **changes)
    assert_one_line(code, err, says, "full log: ")
    assert "proxy 1/" not in out  # refused before training any proxy


def test_any_step_failure_is_one_line_and_a_failure_in_the_ui(tmp_path: Path) -> None:
    """What an asset raises (a full disk here) reaches Dagster as a one-line Failure, and
    `climb` names the step, the cause and the log."""
    from climb_assets.cli.runner import StepFailed, check_success

    @dg.asset
    @one_line_failures
    def dataset_step() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.parquet"))

    with dg.instance_for_test() as instance:
        result = dg.materialize([dataset_step], instance=instance, raise_on_error=False)
    assert step_failure(result) == (
        "dataset_step",
        f"OSError: [Errno 28] No space left on device: '{tmp_path / 'x.parquet'}'",
    )
    with pytest.raises(StepFailed) as err:
        check_success(result, tmp_path / "climb.log", None)
    assert str(err.value).startswith("dataset_step: OSError: [Errno 28] No space left")
    assert f"full log: {tmp_path / 'climb.log'}" in str(err.value)
    assert "Traceback" in err.value.details


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_step_prints_one_line(
    slice_corpus: Path, tmp_path: Path, signum: int
) -> None:
    config = tmp_path / "climb.yaml"
    config.write_text(
        yaml.safe_dump(small_settings(slice_corpus, tmp_path / "out").model_dump(mode="json"))
    )
    (tmp_path / "dagster.yaml").write_text(NO_TELEMETRY)
    env = {k: v for k, v in os.environ.items() if k != "CLIMB_CONFIG"}
    env |= {"PYTHONPATH": str(PROJECT), "PYTHONUNBUFFERED": "1", "DAGSTER_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "climb_assets.cli.main", "--config", str(config), "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a shell starts a background job (CI runners, `climb run &`): SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("[1/"):  # the ingest and embedding step has started
            break
    time.sleep(1.0)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out[-3000:], err[-3000:])
    assert err == "climb: interrupted; rerun the same command to continue\n", err
