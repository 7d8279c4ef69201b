"""Progress of long steps: the line format with a fake clock, its console rendering through
`climb`'s own Dagster logger, the evaluation's default size and its estimate before training."""

import io
import logging
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from climb_assets.core.shared.progress import (
    ConsoleProgress,
    Progress,
    ProgressLine,
    format_left,
    notice,
)
from climb_assets.settings import Settings, SettingsError, load_settings
from climb_assets.store import Layout, iteration_runs


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_count_and_estimate_the_time_left_from_the_mean_per_unit() -> None:
    clock = FakeClock()
    progress = Progress("bootstrap_iteration iter-001", "proxy", 24, clock)
    assert progress.line(0) == "bootstrap_iteration iter-001: proxy 0/24 done"  # no estimate yet
    clock.now += 95.0  # 12 proxies in 95 s: 12 more take as long
    assert progress.line(12) == "bootstrap_iteration iter-001: proxy 12/24 done, ~1m35s left"
    clock.now += 95.0
    assert progress.line(24) == "bootstrap_iteration iter-001: proxy 24/24 done"
    parsed = ProgressLine.parse("bootstrap_iteration iter-001: proxy 12/24 done, ~1m35s left")
    assert parsed == ProgressLine("bootstrap_iteration iter-001", "proxy", 12, 24, "1m35s")
    assert ProgressLine.parse("iter-001 proxy candidate 3 done (3 of 24 to train)") is None


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (59, "59s"), (190, "3m10s"), (3600 + 5 * 60, "1h05m")]
)
def test_format_left(seconds: float, text: str) -> None:
    assert format_left(seconds) == text


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.Logger("test.progress", logging.DEBUG)
    logger.addHandler(handler)
    return logger


def test_off_a_terminal_each_line_is_printed_as_is_and_other_info_is_not() -> None:
    stream = io.StringIO()
    log = _logger(ConsoleProgress(stream, terminal=False))
    clock = FakeClock()
    progress = Progress("final race", "proxy", 2, clock)
    log.info(progress.line(0))
    log.info("final race proxy predicted, seed repeat 0 done (1 of 2 to train): objective -4.1")
    clock.now += 30
    log.info(progress.line(1))
    notice(log, "mixture_evaluation: 18 model(s) to train")
    log.info(progress.line(2))
    assert stream.getvalue().splitlines() == [
        "final race: proxy 0/2 done",
        "final race: proxy 1/2 done, ~30s left",
        "mixture_evaluation: 18 model(s) to train",
        "final race: proxy 2/2 done",
    ]


def test_on_a_terminal_a_bar_is_drawn_and_taken_off_once_done() -> None:
    stream = io.StringIO()
    display = ConsoleProgress(stream, terminal=True)
    log = _logger(display)
    log.info("iter-002: proxy 0/3 done")
    assert display._bar is not None
    log.info("iter-002: proxy 3/3 done")
    assert display._bar is None  # stopped: what the runner prints next is not under a bar
    assert "iter-002" in stream.getvalue() and "3/3" in stream.getvalue()


@dg.asset
def long_step(context: dg.AssetExecutionContext) -> None:
    progress = Progress("long_step", "model", 2)
    context.log.info(progress.line(0))
    context.log.info("long_step: some detail nobody asked to see")
    notice(context.log, "long_step: 2 model(s) to train, about 1s")
    context.log.info(progress.line(1))
    context.log.info(progress.line(2))


def test_climb_console_shows_progress_at_warning_level_and_the_file_gets_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through `launch`, as `climb run` executes a step: progress reaches the console though it
    shows only warnings, and the log file and the run's event log (the UI) have it too."""
    from climb_assets.cli.runner import launch

    defs = dg.Definitions(assets=[long_step])
    log = tmp_path / "climb.log"
    with dg.instance_for_test() as instance:
        result = launch(defs, instance, ("long_step",), log_level="WARNING", log=log)
        assert result.success
        said = [e.user_message for e in instance.all_logs(result.run_id)]
    err = capsys.readouterr().err
    shown = [line for line in err.splitlines() if line.startswith("long_step")]
    assert shown[0] == "long_step: model 0/2 done"
    assert shown[1] == "long_step: 2 model(s) to train, about 1s"
    assert shown[2].startswith("long_step: model 1/2 done, ~") and shown[3].endswith("2/2 done")
    assert "some detail" not in err  # INFO below the console's level stays off it
    assert "some detail" in log.read_text() and "model 2/2 done" in log.read_text()
    assert "long_step: model 2/2 done" in said


def test_the_evaluation_follows_the_proxies_size_unless_set() -> None:
    default = Settings().evaluation
    # The bundled sample's evaluation is the same as when these were fixed numbers.
    assert (default.d_model, default.n_layers, default.n_heads, default.tokens) == (
        192,
        3,
        4,
        200_000,
    )
    small = Settings.model_validate(
        {"proxy": {"d_model": 32, "n_layers": 1, "n_heads": 2, "tokens_per_proxy": 4096}}
    ).evaluation
    assert (small.d_model, small.n_layers, small.n_heads, small.tokens) == (48, 2, 2, 4096)
    odd = Settings.model_validate({"proxy": {"d_model": 40}, "evaluation": {"n_heads": 8}})
    assert odd.evaluation.d_model == 64  # 60, rounded up to a multiple of the heads
    explicit = Settings.model_validate(
        {"proxy": {"tokens_per_proxy": 4096}, "evaluation": {"tokens": 9000, "d_model": 64}}
    ).evaluation
    assert (explicit.tokens, explicit.d_model) == (9000, 64)


def test_an_evaluation_width_that_does_not_fit_its_heads_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("evaluation: {d_model: 90}\n")  # the proxy's 4 heads
    with pytest.raises(SettingsError, match=r"evaluation\.d_model: must be a multiple of"):
        load_settings(path)


def _with_proxy_runs(layout: Layout, speeds: list[list[float]]) -> None:
    from climb_assets.store import iteration_key

    for number, iteration in enumerate(speeds, 1):
        path = layout.runs(iteration_key(number))
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = {"candidate_id": range(len(iteration)), "train_tokens_per_second": iteration}
        pl.DataFrame(frame).write_parquet(path)


def test_the_estimate_before_the_evaluation(tmp_path: Path) -> None:
    from climb_assets.core.search.evaluation_run import (
        cost_per_token,
        estimate_line,
        evaluation_proxy,
        proxy_tokens_per_second,
    )

    settings = Settings.model_validate(
        {
            "output_dir": str(tmp_path),
            "search": {"proxies_per_iteration": [3, 2]},
            "execution": {"local_workers": 2},
        }
    )
    assert estimate_line(settings, 18, 6, 3, None) == (
        "mixture_evaluation: 18 model(s) to train (of 6 distinct mixtures x 3 seed(s)), "
        "200,000 tokens each, time unknown (no proxy training speed recorded)"
    )
    layout = Layout(tmp_path)
    _with_proxy_runs(layout, [[9_000.0, 10_000.0, 30_000.0], [8_000.0, None]])  # median 9.5k
    speed = proxy_tokens_per_second(iteration_runs(layout, 3))
    assert speed == 9_500.0  # every iteration's runs, the missing speed left out
    ratio = cost_per_token(evaluation_proxy(settings)) / cost_per_token(settings.proxy)
    seconds = 9 * 200_000 * ratio / speed  # 18 models, 2 at once
    assert estimate_line(settings, 18, 6, 3, speed) == (
        "mixture_evaluation: 18 model(s) to train (of 6 distinct mixtures x 3 seed(s)), "
        f"200,000 tokens each, about {format_left(seconds)} (proxies trained at 9,500 tok/s; "
        f"an evaluation model costs {ratio:.1f}x a proxy per token; 2 at once)"
    )
    assert 1.5 < ratio < 3  # the sample's evaluation model: wider and one block deeper
