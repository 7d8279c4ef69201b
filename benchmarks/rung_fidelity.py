"""Does a proxy's score at its rung rank mixtures as its full-budget score does?

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/rung_fidelity.py [--outputs outputs]
        [--config climb.yaml] [--iteration 1] [--fractions 0.2 0.3 0.5]
        [--target-shares 1 0.25] [--jobs 2]

Successive halving (`search.rung_fraction`, `search.rung_keep`) stops a round's worse
candidates at a rung and never learns their full-budget score. This trains every candidate of
one finished round to the end with the product's trainer (`core.search.proxy_training`),
scoring it at each rung on the way (stopped there, scored, resumed from its state), and prints,
per rung and per share of the targets scored there (`search.rung_target_share`): the Spearman
correlation of rung and final objectives over all candidates, how many of the true best `keep`
the rung kept, the rank at the rung of the true best, and the regret (best final objective
minus the best among those kept). Rows are cached per candidate under benchmarks/results/, so
an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from climb_assets.core.search.predictor import spearman
from climb_assets.core.shared.atomic import write_parquet
from climb_assets.settings import Settings, load_settings

RESULTS = Path(__file__).parent / "results"


def column(step: int, share: float) -> str:
    return f"step_{step}" if share == 1 else f"step_{step}_share_{share:g}"


def rung_objectives(
    settings_json: str,
    pool_dir: str,
    weights: list[float],
    steps: list[int],
    shares: list[float],
    seed: int,
) -> dict[str, float]:
    """Objective of one candidate at each step of `steps` (ascending), scored on each share of
    the targets, and at the end (on the whole targets)."""
    import torch

    from climb_assets.core.search.proxy_pool import ProxyPool
    from climb_assets.core.search.proxy_training import train_proxy
    from climb_assets.core.search.targets import load_target, objective, score_targets

    torch.set_num_threads(1)
    settings = Settings.model_validate_json(settings_json)
    pool = ProxyPool.open(Path(pool_dir))
    tokenizer, targets = pool.tokenizer(), [load_target(t) for t in settings.targets]
    mixture = dict(zip(pool.groups, weights, strict=True))
    found, state = {}, None
    for stop in [*steps, None]:
        run = train_proxy(pool, mixture, settings.proxy, seed, stop_after=stop, resume=state)
        for share in [1.0] if stop is None else shares:
            scores = score_targets(run.model, tokenizer, targets, settings.proxy, True, share)
            found["final" if stop is None else column(stop, share)] = objective(scores, targets)
        state = run.state
    return found


def report(rows: pl.DataFrame, steps: dict[float, int], shares: list[float], keep: int) -> None:
    """Per rung and share: Spearman to the final objectives (and, with share 1 among the
    shares, to the rung's score on the whole targets), the true best kept, regret."""
    final = rows["final"].to_numpy()
    truth = np.argsort(-final, kind="stable")
    print(f"{rows.height} candidates; kept at the rung: the best {keep}")
    print(
        f"rung  step  share  spearman  to share 1  true top-{keep} kept  "
        "true best's rank at rung  regret"
    )
    for fraction, step in steps.items():
        for share in shares:
            at_rung = rows[column(step, share)].to_numpy()
            whole = (
                f"{spearman(at_rung, rows[column(step, 1.0)].to_numpy()):>10.3f}"
                if 1.0 in shares
                else f"{'':>10}"
            )
            kept = np.argsort(-at_rung, kind="stable")[:keep]
            rank = int(np.flatnonzero(np.argsort(-at_rung, kind="stable") == truth[0])[0]) + 1
            regret = float(final.max() - final[kept].max())
            print(
                f"{fraction:<5} {step:>4}  {share:<5g}  {spearman(at_rung, final):>8.3f}  {whole}  "
                f"{len(set(kept) & set(truth[:keep])):>9} of {keep}  {rank:>24}  {regret:.4f}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"))
    parser.add_argument("--config", type=Path, help="the run's settings file (default: defaults)")
    parser.add_argument("--iteration", type=int, default=1)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    parser.add_argument(
        "--target-shares",
        type=float,
        nargs="+",
        default=[1.0, 0.25],
        help="shares of each target scored at the rungs (search.rung_target_share)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="proxies trained at once")
    args = parser.parse_args()

    from climb_assets.core.search.halving import halving_plan
    from climb_assets.core.search.proxy_jobs import with_absolute_target_paths
    from climb_assets.core.search.proxy_training import rung_step
    from climb_assets.core.search.strategy import proxy_seed

    settings = with_absolute_target_paths(load_settings(args.config))
    runs_path = args.outputs / "bootstrap" / f"iter-{args.iteration:03d}" / "runs.parquet"
    if not runs_path.is_file():
        raise SystemExit(f"no finished round at {runs_path} (run `climb run` first, or --outputs)")
    runs = pl.read_parquet(runs_path)
    columns = sorted((c for c in runs.columns if c.startswith("w_")), key=lambda c: int(c[2:]))
    pool_dir = (args.outputs / "proxy_pool").resolve()
    steps = {f: rung_step(settings.proxy, f) for f in sorted(args.fractions)}
    shares = sorted(set(args.target_shares), reverse=True)
    plan = halving_plan(runs.height, settings.search, settings.proxy)
    keep = plan.keep if plan else max(2, math.ceil(settings.search.rung_keep * runs.height))
    key = hashlib.sha256(
        json.dumps(
            [
                settings.proxy.model_dump_json(),
                str(runs_path.resolve()),
                sorted(steps.values()),
                shares,
            ]
        ).encode()
    ).hexdigest()[:12]
    cache = RESULTS / f"rung_fidelity-{key}.parquet"
    rows = pl.read_parquet(cache).to_dicts() if cache.is_file() else []
    done = {row["candidate_id"] for row in rows}
    todo = [r for r in runs.iter_rows(named=True) if r["candidate_id"] not in done]
    print(f"{runs_path}: {runs.height} candidates, {len(todo)} to train; cache {cache}")
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as workers:
        futures = {
            workers.submit(
                rung_objectives,
                settings.model_dump_json(),
                str(pool_dir),
                [float(r[c]) for c in columns],
                sorted(steps.values()),
                shares,
                proxy_seed(settings.seed),
            ): r["candidate_id"]
            for r in todo
        }
        for future, candidate in futures.items():
            rows.append({"candidate_id": candidate, **future.result()})
            write_parquet(pl.DataFrame(rows).sort("candidate_id"), cache)
            print(f"  candidate {candidate}: {rows[-1]}", flush=True)
    if todo:
        print(f"trained {len(todo)} in {time.perf_counter() - started:.0f} s")
    report(pl.DataFrame(rows).sort("candidate_id"), steps, shares, keep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
