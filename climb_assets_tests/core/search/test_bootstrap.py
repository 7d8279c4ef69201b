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
    """Fails every proxy from candidate `first_failing` on, as a round cut short; with
    `after_rung`, only their training past the rung (successive halving's second half)."""

    first_failing: int = 0
    after_rung: bool = False

    def __call__(self, job: ProxyJob) -> dict:
        past_rung = job.stop_after is None and job.repeat == 0
        if job.candidate_id >= self.first_failing and (past_rung or not self.after_rung):
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
    # Successive halving: 5 rungs, then the 3 best (ceil(0.5 * 5)) and 2 seed repeats in full.
    assert len(first.trained) == 5 + 3 + SETTINGS.search.seed_repeats
    # The local backend's worker processes: one per CPU at proxy.cpu_threads (1) each.
    assert 1 <= len(first.workers) <= available_cpus()


def test_the_log_callback_hears_every_proxy(two_rounds: tuple) -> None:
    first, second, said = two_rounds
    trained = len(first.trained) + len(second.trained)
    done = [line for line in said if " done (" in line]
    assert len(done) == trained
    halved = [line for line in said if " go on from their rung " in line]
    assert halved[0] == (
        "round 1: 3 of 5 candidates go on from their rung (512 tokens, scored on 25% of each "
        "target) to the full budget; the other 2 keep an estimated objective"
    )
    assert len(halved) == 2
    # Besides, a count per proxy and one as each of a round's two batches starts (the rungs,
    # then the full budget; `climb_assets.core.shared.progress`).
    counts = [ProgressLine.parse(line) for line in said if line not in done + halved]
    assert len(counts) == len(said) - trained - 2 == trained + 4
    assert [(c.task, c.done, c.total) for c in counts[:2]] == [
        ("round 1 (rungs)", 0, 5),
        ("round 1 (rungs)", 1, 5),
    ]
    assert counts[0].left is None and counts[1].left is not None  # an estimate once one is done
    assert ("round 1", 0, 3 + SETTINGS.search.seed_repeats) in [
        (c.task, c.done, c.total) for c in counts
    ]
    # Counted as they finish, whichever worker finishes first.
    assert [line.split(" done (")[1].split(" of ")[0] for line in done[:3]] == ["1", "2", "3"]
    assert any(line.startswith("round 1 (rungs) proxy candidate 0 done (") for line in done)
    assert any(line.startswith("round 2 (rungs) proxy candidate 5 done") for line in done)
    assert any(", seed repeat 1 done" in line for line in done)


def test_halving_stops_the_worst_candidates_at_their_rung(two_rounds: tuple) -> None:
    """The best candidates at the rung go on; the others keep an estimate that never ranks them
    above a finished run of their round, so the best observed run is always a finished one."""
    for result, kept in zip(two_rounds[:2], (3, 2), strict=True):
        runs = result.runs
        assert runs["estimated"].sum() == runs.height - kept
        finished, stopped = runs.filter(~pl.col("estimated")), runs.filter(pl.col("estimated"))
        assert set(finished["proxy_tokens"]) == {2048} and set(stopped["proxy_tokens"]) == {512}
        # Rungs score a share of the target (search.rung_target_share); the end scores it all.
        assert stopped["text/tokens"].max() < finished["text/tokens"].min()
        # The kept ones are the best at the rung.
        assert finished["rung_objective"].min() >= stopped["rung_objective"].max()
        assert stopped["objective"].max() < finished["objective"].min()
        # The estimate keeps the rung's order.
        order = stopped.sort("rung_objective")["objective"].to_list()
        assert order == sorted(order)
        assert not runs.row(int(runs["score"].arg_max()), named=True)["estimated"]
        # Seed repeats pair two full-budget runs.
        assert set(result.repeats["candidate_id"]) <= set(finished["candidate_id"])
        assert result.summary["stopped_at_rung"] == runs.height - kept


def test_a_rung_checkpoint_scored_on_another_share_of_the_targets_is_not_reused(
    pool_dir: Path, tmp_path: Path
) -> None:
    trainer = _trainer(pool_dir, tmp_path)
    rung = ProxyJob(0, (0.5, 0.25, 0.25), 0).at_rung(2, target_share=0.25)
    trainer(rung)
    assert trainer.finished(rung) is not None
    assert trainer.finished(rung.at_rung(2, target_share=1.0)) is None
    assert trainer.finished(rung.at_rung(3, target_share=0.25)) is None


def test_without_halving_every_candidate_trains_to_the_end(pool_dir: Path, tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(
        update={"search": SETTINGS.search.model_copy(update={"rung_fraction": 1.0})}
    )
    trainer = ProxyTrainer(settings, pool_dir, tmp_path, "tiny-run")
    result = run_round(1, None, TOKEN_COUNTS, BUDGET_TOKENS, settings, trainer, log=print)
    assert len(result.trained) == 5 + settings.search.seed_repeats
    assert "estimated" not in result.runs.columns
    assert set(result.runs["proxy_tokens"]) == {2048}
    assert result.summary["stopped_at_rung"] == 0


def test_an_interrupted_round_resumes_and_trains_only_the_rest(
    pool_dir: Path, tmp_path: Path, two_rounds: tuple
) -> None:
    clean, _, _ = two_rounds
    work = tmp_path / "work"
    said: list[str] = []
    with pytest.raises(
        ProxiesFailed, match=r"round 1 \(rungs\): proxies failed \(candidate 3, candidate 4"
    ):
        _round(1, None, _trainer(pool_dir, work, FailsFrom, first_failing=3), said)
    written = {p.stem for p in work.glob("candidate-*.json")}
    assert written == {"candidate-0-rung", "candidate-1-rung", "candidate-2-rung"}

    said.clear()
    resumed = _round(1, None, _trainer(pool_dir, work), said)
    retrained = [d["row"]["candidate_id"] for d in resumed.trained if d["stop_after"]]
    assert set(retrained) == {3, 4} and len(resumed.trained) == len(clean.trained) - len(written)
    assert sum("resumed from" in line for line in said) == len(written)
    assert _measured(resumed.runs).equals(_measured(clean.runs))
    assert resumed.curves.equals(clean.curves)
    assert resumed.repeats.equals(clean.repeats)
    assert resumed.summary == clean.summary
    np.testing.assert_array_equal(
        resumed.fitted.predictor.predict(clean.plan.weights),
        clean.fitted.predictor.predict(clean.plan.weights),
    )


def test_a_round_cut_short_past_its_rungs_resumes_the_kept_proxies_from_their_state(
    pool_dir: Path, tmp_path: Path, two_rounds: tuple
) -> None:
    clean, _, _ = two_rounds
    kept = clean.runs.filter(~pl.col("estimated"))["candidate_id"].to_list()
    work = tmp_path / "work"
    with pytest.raises(ProxiesFailed, match=r"round 1: proxies failed"):
        _round(1, None, _trainer(pool_dir, work, FailsFrom, first_failing=0, after_rung=True))
    # The kept candidates' states wait for them; the stopped ones' are gone.
    states = sorted(p.name.split("-rung-")[0] for p in work.glob("*.pt"))
    assert states == [f"candidate-{c}" for c in sorted(kept)]
    resumed = _round(1, None, _trainer(pool_dir, work))
    assert sorted(d["row"]["candidate_id"] for d in resumed.trained) == sorted(kept)
    assert _measured(resumed.runs).equals(_measured(clean.runs))
    assert resumed.curves.equals(clean.curves)
    assert not list(work.glob("*.pt"))
