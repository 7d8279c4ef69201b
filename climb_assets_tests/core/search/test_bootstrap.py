"""One bootstrap round on a tiny pool with tiny real proxies: what it writes, that it logs, and
that an interrupted round resumes from its checkpoints with the same result."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from climb_assets.core.search.bootstrap import ProxiesFailed, RoundResult, run_round
from climb_assets.core.search.proxy_jobs import CURVE_SCHEMA, ProxyJob, ProxyTrainer
from climb_assets.core.search.strategy import REPEAT_SCHEMA
from climb_assets.core.shared.execution import available_cpus
from climb_assets.core.shared.progress import ProgressLine
from climb_assets_tests.core.search.tiny_search import BUDGET_TOKENS, SETTINGS, TOKEN_COUNTS


@dataclass(frozen=True)
class FailsFrom(ProxyTrainer):
    """Fails every first-seed proxy from candidate `first_failing` on, as a round cut short."""

    first_failing: int = 0

    def __call__(self, job: ProxyJob) -> dict:
        if job.candidate_id >= self.first_failing:
            raise RuntimeError("interrupted")
        return super().__call__(job)


def _round(
    iteration: int,
    history: pl.DataFrame | None,
    trainer: ProxyTrainer,
    said: list[str] | None = None,
) -> RoundResult:
    log = (lambda message: None) if said is None else said.append
    return run_round(
        iteration,
        history,
        TOKEN_COUNTS,
        BUDGET_TOKENS,
        SETTINGS,
        trainer,
        log=log,
        label=f"round {iteration}",
    )


def _trainer(pool_dir: Path, work_dir: Path, cls: type[ProxyTrainer] = ProxyTrainer, **extra):
    return cls(SETTINGS, pool_dir, work_dir, "tiny-run", **extra)


@pytest.fixture(scope="module")
def two_rounds(
    pool_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RoundResult, RoundResult, list[str]]:
    work = tmp_path_factory.mktemp("work")
    said: list[str] = []
    first = _round(1, None, _trainer(pool_dir, work / "1"), said)
    second = _round(2, first.runs, _trainer(pool_dir, work / "2"), said)
    return first, second, said


def _measured(runs: pl.DataFrame) -> pl.DataFrame:
    return runs.drop("train_tokens_per_second")  # the only column that depends on timing


def test_a_round_plans_trains_scores_and_fits(two_rounds: tuple) -> None:
    first, second, _ = two_rounds
    assert first.runs.height == 5 and second.runs.height == 4
    assert second.runs["candidate_id"].to_list() == [5, 6, 7, 8]
    assert first.runs.columns[:4] == ["candidate_id", "iteration", "source", "w_0"]
    assert {"text/bits_per_byte", "objective", "score"} <= set(first.runs.columns)
    assert first.runs["score"].equals(first.runs["objective"].alias("score"))
    assert np.isfinite(first.runs["score"].to_numpy()).all()
    weights = first.runs.select("w_0", "w_1", "w_2").to_numpy()
    np.testing.assert_array_equal(weights, first.plan.weights)
    # Loss curves of the first-seed runs only; the repeats pair both seeds' scores.
    assert first.curves.schema == pl.Schema(CURVE_SCHEMA)
    assert set(first.curves["candidate_id"]) == set(first.runs["candidate_id"])
    assert first.repeats.schema == pl.Schema(REPEAT_SCHEMA)
    assert first.repeats.height == SETTINGS.search.seed_repeats
    assert (first.repeats["score"] != first.repeats["repeat_score"]).all()
    # The predictor is fitted on every run so far.
    assert first.fitted.n_rows == 5 and second.fitted.n_rows == 9
    summary = second.summary
    assert summary["iteration"] == 2 and summary["proxies"] == 4
    assert summary["best_score"] == second.runs["score"].max()
    assert summary["predictor_rows"] == 9 and summary["repeated"] == second.repeats.height
    assert len(first.trained) == 5 + SETTINGS.search.seed_repeats
    # The local backend's worker processes: one per CPU at proxy.cpu_threads (1) each.
    assert 1 <= len(first.workers) <= available_cpus()


def test_the_log_callback_hears_every_proxy(two_rounds: tuple) -> None:
    first, second, said = two_rounds
    trained = len(first.trained) + len(second.trained)
    done = [line for line in said if " done (" in line]
    assert len(done) == trained
    # Besides, a count per proxy and one as each round starts (`climb_assets.core.shared.progress`).
    counts = [ProgressLine.parse(line) for line in said if line not in done]
    assert len(counts) == len(said) - trained == trained + 2
    first_count = len(first.trained)
    assert [(c.task, c.done, c.total) for c in counts[:2]] == [
        ("round 1", 0, first_count),
        ("round 1", 1, first_count),
    ]
    assert counts[0].left is None and counts[1].left is not None  # an estimate once one is done
    # Counted as they finish, whichever worker finishes first.
    assert [line.split(" done (")[1].split(" of ")[0] for line in done[:3]] == ["1", "2", "3"]
    assert any(line.startswith("round 1 proxy candidate 0 done (") for line in done)
    assert any(line.startswith("round 2 proxy candidate 5 done") for line in done)
    assert any(", seed repeat 1 done" in line for line in done)


def test_an_interrupted_round_resumes_and_trains_only_the_rest(
    pool_dir: Path, tmp_path: Path, two_rounds: tuple
) -> None:
    clean, _, _ = two_rounds
    work = tmp_path / "work"
    said: list[str] = []
    with pytest.raises(ProxiesFailed, match=r"round 1: proxies failed \(candidate 3, candidate 4"):
        _round(1, None, _trainer(pool_dir, work, FailsFrom, first_failing=3), said)
    written = {p.stem for p in work.glob("candidate-*.json")}
    assert {"candidate-0", "candidate-1", "candidate-2"} <= written
    assert not written & {"candidate-3", "candidate-4"}

    said.clear()
    resumed = _round(1, None, _trainer(pool_dir, work), said)
    retrained = [d["row"]["candidate_id"] for d in resumed.trained]
    assert set(retrained) == {3, 4} and len(retrained) == len(clean.trained) - len(written)
    assert sum("resumed from" in line for line in said) == len(written)
    assert _measured(resumed.runs).equals(_measured(clean.runs))
    assert resumed.curves.equals(clean.curves)
    assert resumed.repeats.equals(clean.repeats)
    assert resumed.summary == clean.summary
    np.testing.assert_array_equal(
        resumed.fitted.predictor.predict(clean.plan.weights),
        clean.fitted.predictor.predict(clean.plan.weights),
    )
