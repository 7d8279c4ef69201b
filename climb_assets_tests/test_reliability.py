"""A `climb` that died, two at once, exact resume, read-only SQL and one-line CLI errors, on a
real Dagster instance, real DuckDB and real `climb` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from climb_assets.core.shared.run_owner import Owner, ProjectBusyError, project_lock
from climb_assets.defs.run_guard import owner_tags, pool_holders, recover_dead_runs
from climb_assets.settings import Settings
from climb_assets.store import Layout
from climb_assets_tests.conftest import PROJECT, small_settings

POOLS = {"concurrency": {"pools": {"granularity": "op", "default_limit": 1}}}


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home), overrides=POOLS) as inst:
        yield inst


def dead_owner() -> Owner:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = Owner.of_pid(child.pid)
    child.wait()
    return owner


def started_run_holding_gpu(instance: dg.DagsterInstance, owner: Owner) -> dg.DagsterRun:
    """A run as a `climb run` leaves it when killed inside a GPU step: STARTED, slot claimed."""
    run = dg.DagsterRun(
        job_name="__ASSET_JOB",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
        tags=owner_tags(owner),
    )
    instance.add_run(run)
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default("gpu")
    assert storage.claim_concurrency_slot("gpu", run.run_id, "shard_embeddings").is_claimed
    return run


def test_a_dead_owners_run_is_failed_and_its_slot_freed(instance: dg.DagsterInstance) -> None:
    run = started_run_holding_gpu(instance, dead_owner())
    assert pool_holders(instance, "gpu") == [run.run_id]
    said: list[str] = []
    assert recover_dead_runs(instance, said.append) == [run.run_id]
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert pool_holders(instance, "gpu") is None
    assert len(said) == 1 and run.run_id in said[0] and "died" in said[0]


def test_a_reused_pid_does_not_keep_a_run_alive(instance: dg.DagsterInstance) -> None:
    me = Owner.current()
    impostor = Owner(me.pid, me.host, me.started - 3600)  # same pid, another process's start
    run = started_run_holding_gpu(instance, impostor)
    assert recover_dead_runs(instance, lambda _: None) == [run.run_id]
    assert Owner(me.pid, "another-host", 0.0).is_alive()  # cannot tell from here: left alone


def test_a_live_owners_run_is_left_alone(instance: dg.DagsterInstance) -> None:
    run = started_run_holding_gpu(instance, Owner.current())
    assert recover_dead_runs(instance, lambda _: None) == []
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    assert pool_holders(instance, "gpu") == [run.run_id]


def test_a_second_climb_run_is_refused_with_the_first_ones_name(
    slice_corpus: Path, tmp_path: Path
) -> None:
    config = write_config(small_settings(slice_corpus, tmp_path / "out"), tmp_path)
    lock = tmp_path / "out" / ".climb-run.lock"
    with project_lock(lock, "climb run") as owner:  # as the first `climb run` holds it
        second = _climb("--config", str(config), "run", cwd=tmp_path)
        out = second.communicate(timeout=120)[0]
        assert second.returncode == 1
        assert out.count("\n") == 1 and out.startswith("climb: error: climb run (pid ")
        assert f"pid {owner.pid} " in out and "already running" in out
        with pytest.raises(ProjectBusyError):  # the same process opening it again, too
            project_lock(lock).__enter__()
    with project_lock(lock):  # released with its holder
        pass


def write_config(settings: Settings, folder: Path, name: str = "climb") -> Path:
    config = folder / f"{name}.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    return config


def _env(**extra: str) -> dict[str, str]:
    """`climb`'s environment: only the settings and instance the test names."""
    env = {k: v for k, v in os.environ.items() if k not in ("CLIMB_CONFIG", "DAGSTER_HOME")}
    env |= {"PYTHONPATH": str(PROJECT), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return env | extra


def _climb(*args: str, cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "climb_assets.cli.main", *args],
        cwd=cwd,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigterm_stops_a_run_waiting_for_a_slot(
    instance: dg.DagsterInstance, slice_corpus: Path, tmp_path: Path
) -> None:
    run = started_run_holding_gpu(instance, Owner.current())  # alive: must be waited for
    config = write_config(small_settings(slice_corpus, tmp_path / "out"), tmp_path)
    home = instance.root_directory
    proc = _climb("--config", str(config), "run", cwd=tmp_path, DAGSTER_HOME=home)
    lines = _read_until(proc, "waiting for a slot", timeout=120)
    assert run.run_id in lines[-1] and "Ctrl-C" in lines[-1]
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 130  # interrupted, as after Ctrl-C
    assert "Traceback" not in rest and rest.strip().startswith("climb: ")


def _read_until(proc: subprocess.Popen, text: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if text in line:
            return lines
    proc.kill()
    raise AssertionError(f"{text!r} never printed; got:\n" + "\n".join(lines))


def test_fresh_and_resumed_proxy_rows_give_the_same_runs_table(tmp_path: Path) -> None:
    import json

    from climb_assets.core.search.proxy_jobs import canonical_run_row
    from climb_assets.store import iteration_runs

    fresh = {"candidate_id": 3, "repeat": 0, "held_out_text/loss": 2.5, "objective": -1.25}
    fresh |= {"train_tokens_per_second": 900.0, "final_train_loss": 3.0}
    resumed = json.loads(json.dumps(fresh, sort_keys=True))  # as a checkpoint stores it
    assert list(resumed) != list(fresh)
    one, other = (pl.DataFrame([canonical_run_row(r)]) for r in (fresh, resumed))
    assert one.columns[:3] == ["candidate_id", "repeat", "objective"] and one.equals(other)

    # Iterations written before the order was fixed still combine, by column name.
    layout = Layout(tmp_path)
    for key, frame in (("iter-001", pl.DataFrame([resumed])), ("iter-002", one)):
        layout.iteration(key).mkdir(parents=True)
        frame.write_parquet(layout.runs(key))
    history = iteration_runs(layout, 3)
    assert history is not None and history.height == 2
    assert history["final_train_loss"].to_list() == [3.0, 3.0]


@pytest.mark.slow
def test_kill_9_mid_iteration_then_a_rerun_gives_the_clean_runs_dataset(
    slice_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copy(PROJECT / "dagster.yaml", tmp_path)  # the project's instance, pools included
    clean = Layout(tmp_path / "clean")
    _run_to_the_end(write_config(small_settings(slice_corpus, clean.root), tmp_path, "clean"))

    # Same instance and unchanged shards: the killed run starts at the corpus-wide stage.
    killed = Layout(tmp_path / "killed")
    for folder in ("documents", "rejects", "embeddings"):
        shutil.copytree(clean.root / folder, killed.root / folder)
    config = write_config(small_settings(slice_corpus, killed.root), tmp_path, "killed")
    proc = _climb("--config", str(config), "run", cwd=tmp_path)
    _read_until(proc, "[iter-001] ...", timeout=300)
    work = killed.iteration_work("iter-001")
    _wait_for(lambda: any(work.glob("candidate-*.json")), timeout=300)
    proc.kill()  # SIGKILL: no cleanup at all
    proc.communicate()

    monkeypatch.chdir(tmp_path)  # dagster.yaml's storage paths are relative to the cwd
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        stuck = pool_holders(instance, "gpu")
        assert stuck and instance.get_run_by_id(stuck[0]).status == dg.DagsterRunStatus.STARTED
    out = _run_to_the_end(config)
    assert out.count("recovered run") == 1 and stuck[0] in out

    names = [p.name for p in clean.dataset_shards()]
    assert names and names == [p.name for p in killed.dataset_shards()]
    for name in names:
        assert (killed.dataset / name).read_bytes() == (clean.dataset / name).read_bytes(), name
    # The card differs only in provenance: run ids, and the settings hash (output_dir differs).
    cards = [_provenance_masked(at) for at in (clean, killed)]
    assert cards[0] == cards[1]
    for key in ("iter-001", "iter-002"):
        runs = [pl.read_parquet(at.runs(key)) for at in (clean, killed)]
        timing = "train_tokens_per_second"  # the only measured column
        assert runs[0].drop(timing).equals(runs[1].drop(timing)), key


def _provenance_masked(layout: Layout) -> str:
    import re

    card = layout.dataset_card.read_text().replace(str(layout.root), "OUT")
    card = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "RUN", card)
    return re.sub(r"Settings hash: `[0-9a-f]+`", "Settings hash", card)


def _run_to_the_end(config: Path) -> str:
    proc = _climb("--config", str(config), "run", cwd=config.parent)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    return out


def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture
def sql_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An output folder with one table, a settings file naming it, and a secret beside it."""
    out = tmp_path / "out"
    (out / "clusters").mkdir(parents=True)
    pl.DataFrame({"super_cluster": [0, 1], "n_docs": [5, 7]}).write_parquet(
        out / "clusters" / "super_clusters.parquet"
    )
    (tmp_path / "secret.txt").write_text("password\n")
    monkeypatch.delenv("CLIMB_CONFIG", raising=False)
    config = tmp_path / "climb.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(out)}))
    return config


def climb_sql(config: Path, query: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from climb_assets.cli.main import main

    code = main(["--config", str(config), "sql", query])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_climb_sql_reads_the_tables(sql_project: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = climb_sql(sql_project, "SELECT sum(n_docs) AS docs FROM super_clusters", capsys)
    assert code == 0 and "12" in out
    for query in ("DESCRIBE super_clusters", "SHOW TABLES", "SUMMARIZE super_clusters"):
        assert climb_sql(sql_project, query, capsys)[0] == 0, query
    explained = "EXPLAIN ANALYZE WITH s AS (FROM super_clusters) SELECT count(*) FROM s"
    assert climb_sql(sql_project, explained, capsys)[0] == 0


@pytest.mark.parametrize(
    "query",
    [
        "COPY (SELECT 1) TO '{out}/copied.csv'",
        "COPY (SELECT 1) TO '{root}/copied.csv'",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}/copied.csv'",
        "ATTACH '{root}/new.db' AS x",
        "SELECT * FROM read_text('{root}/secret.txt')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM glob('/root/**')",
        "SELECT * FROM read_csv('{out}/../secret.txt')",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SELECT 1; SET lock_configuration = false; SELECT * FROM read_text('/etc/passwd')",
        "CREATE TABLE t AS SELECT 1",
    ],
)
def test_climb_sql_refuses_what_is_not_a_read_inside_the_output(
    sql_project: Path, query: str, capsys: pytest.CaptureFixture
) -> None:
    root = sql_project.parent
    code, out = climb_sql(sql_project, query.format(out=root / "out", root=root), capsys)
    assert code == 1 and out.count("\n") == 1 and out.startswith("climb: error: "), out
    assert "password" not in out and "root:" not in out
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == [
        "climb.yaml",
        "secret.txt",
        "super_clusters.parquet",
    ]


def test_the_sql_connection_itself_reads_only_the_output(sql_project: Path) -> None:
    """Behind the statement check, DuckDB refuses by itself what a SELECT could still do."""
    import duckdb

    from climb_assets.cli.catalog import connect

    out = Layout(sql_project.parent / "out")
    con, views = connect(out)
    assert views == ["super_clusters"]
    assert con.execute("SELECT count(*) FROM super_clusters").fetchall() == [(2,)]
    for query in (
        f"SELECT * FROM read_text('{sql_project.parent / 'secret.txt'}')",
        "SELECT * FROM glob('/root/**')",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "LOAD httpfs",
    ):
        with pytest.raises(duckdb.Error):
            con.execute(query).fetchall()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--config", "{root}/bad.yaml", "run"], "bad.yaml, line 2, column 11: invalid YAML"),
        (["--config", "{root}/missing.yaml", "config", "show"], "missing.yaml does not exist"),
        (["--config", "{root}/climb.yaml", "sql", "SELEC 1"], "syntax error"),
        (["--config", "{root}/climb.yaml", "sql", "SELECT * FROM nope"], "nope does not exist"),
        (["predictor", "cv", "{root}/ragged.csv", "--maximize"], "ragged.csv: not a readable"),
        (["predictor", "cv", "{root}/broken.parquet", "--maximize"], "broken.parquet: not a "),
        (["predictor", "cv", "{root}/bad.yaml", "--maximize"], "unknown table type '.yaml'"),
        (["predictor", "cv", "{root}/none.csv", "--maximize"], "none.csv does not exist"),
    ],
)
def test_every_cli_error_is_one_line(
    sql_project: Path, argv: list[str], says: str, capsys: pytest.CaptureFixture
) -> None:
    from climb_assets.cli.main import main

    root = sql_project.parent
    (root / "bad.yaml").write_text("seed: [1, 2\nclustering: {}\n")
    (root / "ragged.csv").write_text('w_0,w_1,score\n0.5,0.5,1\n0.2,"0.8\n0.1,0.9,x,y\n')
    (root / "broken.parquet").write_bytes(b"PAR1 not really")
    code = main([a.format(root=root) for a in argv])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and says in err, err
    assert err.startswith("climb: error: ") and "Traceback" not in err


def test_debug_shows_the_traceback(sql_project: Path) -> None:
    import duckdb

    from climb_assets.cli.main import main

    with pytest.raises(duckdb.ParserException):
        main(["--debug", "--config", str(sql_project), "sql", "SELEC 1"])


def test_sql_views_skip_what_a_killed_write_left_behind(tmp_path: Path) -> None:
    from climb_assets.cli.catalog import connect

    hidden = tmp_path / ".out"  # a dot in the output folder's own path is fine
    layout = Layout(hidden)
    for folder, score in (("iter-001", 1.0), (".iter-001.abc123.tmp", 99.0)):
        (layout.root / "bootstrap" / folder).mkdir(parents=True)
        pl.DataFrame({"candidate_id": [0], "objective": [score]}).write_parquet(
            layout.root / "bootstrap" / folder / "runs.parquet"
        )
    con, _ = connect(layout)
    assert con.execute("SELECT objective FROM proxy_runs").fetchall() == [(1.0,)]
