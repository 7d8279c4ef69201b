"""Predictor quality: how well the bagged predictor ranks unseen runs, against default LightGBM.

    .venv/bin/python benchmarks/predictor_quality.py [--runs 256] [--tokens 50000]
        [--pool outputs/proxy_pool] [--config settings.yaml] [--targets NAME,...]
        [--domain-targets 40 --eval-tokens 6000 --columns all --jobs 2]
    .venv/bin/python benchmarks/predictor_quality.py --synthetic [--runs 256] [--groups 12]

Real mode trains `--runs` proxies (the project's trainer,
`core.search.scoring.train_and_score`) on Dirichlet mixtures drawn by
`core.search.mixtures.sample_dirichlet` under the search's caps, and caches
each finished run to benchmarks/results/predictor_quality-<key>.parquet (the key hashes pool,
proxy settings, targets and seed), so an interrupted build resumes and a larger --runs only
trains the new rows. `--tokens` shrinks every proxy (tokens_per_proxy) so hundreds are
affordable. `--domain-targets N` adds one text target per domain of the bundled sample (N of its
corpus documents each), so every run is scored on many columns at once, as RegMix's table
(13 loss columns) is; `--columns all` then evaluates each score column on its own. Synthetic
mode replaces the proxies by a known smooth function plus noise.

Then, for n in --sizes, --repeats random subsamples: fit on n runs, predict the rest, and print
the mean out-of-sample Spearman, the true percentile (100 = best) among the held-out runs of
the run each model predicts best, and the share of distinct predictions (1 = no ties). A
constant prediction has no Spearman; it counts as 0. Synthetic mode also scores `choose_final`
on the true function.

Rough figures (2-vCPU shared machine). Real, 256 proxies at --tokens 50000 (3.9 s each on one
torch thread, 17 min), one held-out pydocs target; Spearman / pick percentile: n=16 ours
0.81 / 98, trees only 0.84 / 84, LGBMRegressor() 0 / 51 (constant: min_child_samples=20);
n=32 0.89 / 96, 0.91 / 94, 0 / 41; n=64 0.95 / 96, 0.95 / 96, 0.86 / 89; n=112 0.96 / 97,
0.96 / 98, 0.94 / 94. --synthetic (12 groups, noise 0.3): n=16 ours 0.72 / 67, trees only
0.73 / 79; n=64 0.88 / 86 against 0.86 / 89. Every column of the sample's 12 (--domain-targets
40 --eval-tokens 6000 --columns all): ours level with or ahead of plain LightGBM on all 12 at
every n from 16 to 192; mean Spearman over columns at n=64 0.847, trees only 0.815, plain 0.722.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from climb_assets.core.search.final_choice import best_mixture, choose_final
from climb_assets.core.search.mixtures import (
    MixtureConstraints,
    build_constraints,
    sample_dirichlet,
)
from climb_assets.core.search.predictor import fit_predictor, spearman
from climb_assets.core.shared.atomic import write_parquet
from climb_assets.settings import (
    PredictorSettings,
    ProxySettings,
    Settings,
    TargetSettings,
    load_settings,
)

RESULTS = Path(__file__).parent / "results"
CHUNK = 64  # mixtures are drawn in seeded chunks, so the first N runs do not depend on --runs
MIN_HELD_OUT = 8
LOWER_IS_BETTER = ("bits_per_byte", "loss", "gold_loss")


def mixtures(constraints: MixtureConstraints, n: int, seed: int) -> np.ndarray:
    chunks = []
    for index in range(-(-n // CHUNK)):
        chunk_seed = np.random.SeedSequence([seed, index])
        chunks.append(sample_dirichlet(constraints, CHUNK, np.random.default_rng(chunk_seed)))
    return np.vstack(chunks)[:n]


def proxy_seed(seed: int, run: int) -> int:
    return int(np.random.SeedSequence([seed, 7, run]).generate_state(1)[0])


# ------------------------------------------------------------------------------ real proxies


def chosen_targets(args: argparse.Namespace, settings: Settings) -> list[TargetSettings]:
    chosen = settings.targets
    if args.targets:
        names = args.targets.split(",")
        chosen = [t for t in settings.targets if t.name in names]
        if len(chosen) != len(names):
            raise SystemExit(f"--targets {names}: known {[t.name for t in settings.targets]}")
    if args.domain_targets:
        chosen = chosen + domain_targets(args.domain_targets, args.seed)
    return chosen


def domain_targets(per_domain: int, seed: int) -> list[TargetSettings]:
    """One text target per domain of the bundled sample: `per_domain` of its corpus documents
    (drawn by `seed`), written under benchmarks/results/predictor_columns/."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from search_quality import sample_documents

    docs = sample_documents().sort("id")
    dest = RESULTS / "predictor_columns"
    dest.mkdir(parents=True, exist_ok=True)
    targets = []
    for domain in sorted(docs["domain"].unique()):
        chosen = docs.filter(pl.col("domain") == domain).sample(per_domain, seed=seed)
        path = dest / f"{domain}-{per_domain}-{seed}.jsonl"
        chosen.select("text").write_ndjson(path)
        targets.append(TargetSettings(name=f"domain_{domain}", kind="text", path=path))
    return targets


def build_cache(args: argparse.Namespace, settings: Settings) -> pl.DataFrame:
    """Train the runs missing from the cache (`--jobs` at a time), writing it after each one;
    return its rows."""
    from climb_assets.core.search.proxy_pool import ProxyPool
    from climb_assets.store import POOL_MANIFEST, Layout

    pool_dir = Path(args.pool or Layout(settings.output_dir).proxy_pool)
    if not (pool_dir / POOL_MANIFEST).is_file():
        raise SystemExit(
            f"no proxy pool at {pool_dir} (run the pipeline's proxy_pool asset first, pass "
            "--pool DIR, or use --synthetic)"
        )
    proxy = settings.proxy.model_copy(
        update={
            "tokens_per_proxy": args.tokens or settings.proxy.tokens_per_proxy,
            "eval_max_tokens": args.eval_tokens or settings.proxy.eval_max_tokens,
        }
    )
    chosen = chosen_targets(args, settings)
    key = hashlib.sha256(
        json.dumps(
            {
                "pool": (pool_dir / POOL_MANIFEST).read_text(),
                "proxy": proxy.model_dump(mode="json"),
                "targets": [
                    t.model_dump(mode="json") | {"text": Path(t.path).read_text()} for t in chosen
                ],
                "search": settings.search.model_dump(mode="json"),
                "seed": args.seed,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:12]
    cache = Path(args.cache or RESULTS / f"predictor_quality-{key}.parquet")
    constraints = build_constraints(
        ProxyPool.open(pool_dir).token_counts(), settings.search, proxy.tokens_per_proxy
    )
    weights = mixtures(constraints, args.runs, args.seed)
    rows = pl.read_parquet(cache).to_dicts() if cache.is_file() else []
    done = {row["run"] for row in rows}
    print(
        f"cache {cache}: {len(done)} run(s) cached, {args.runs} wanted; {pool_dir}; "
        f"{len(chosen)} target(s)"
    )
    todo = [run for run in range(args.runs) if run not in done]
    seconds = []
    with ProcessPoolExecutor(
        max_workers=args.jobs,
        initializer=_open_worker,
        initargs=(pool_dir, proxy, chosen, args.threads),
    ) as executor:
        futures = [
            executor.submit(_train_run, run, weights[run], proxy_seed(args.seed, run))
            for run in todo
        ]
        for future in as_completed(futures):
            row = future.result()
            seconds.append(row["seconds"])
            rows.append(row)
            write_parquet(pl.DataFrame(rows).sort("run"), cache)
            print(
                f"  {len(seconds)}/{len(todo)}: run {row['run']} objective "
                f"{row['objective']:.4f}, {row['seconds']:.1f} s ({proxy.tokens_per_proxy:,} "
                "tokens)",
                flush=True,
            )
    if seconds:
        print(
            f"trained {len(seconds)} proxies: {np.mean(seconds):.2f} s per proxy (median "
            f"{np.median(seconds):.2f} s) at {proxy.tokens_per_proxy:,} tokens, scored on "
            f"{len(chosen)} target(s), {args.jobs} at a time on {args.threads} torch thread(s)"
        )
    table = pl.DataFrame(rows).sort("run").filter(pl.col("run") < args.runs)
    stale = np.abs(table.select(f"w_{j}" for j in range(constraints.k)).to_numpy() - weights)
    if stale.max() > 1e-9:
        raise SystemExit(f"{cache} holds other mixtures than this setting draws; delete it")
    return table


_WORKER: dict = {}


def _open_worker(
    pool_dir: Path, proxy: ProxySettings, targets: list[TargetSettings], threads: int
) -> None:
    import torch

    from climb_assets.core.search.proxy_pool import ProxyPool
    from climb_assets.core.search.targets import load_target

    torch.set_num_threads(threads)
    pool = ProxyPool.open(pool_dir)
    _WORKER.update(
        pool=pool,
        proxy=proxy,
        tokenizer=pool.tokenizer(),
        targets=[load_target(t) for t in targets],
    )


def _train_run(run: int, weights: np.ndarray, seed: int) -> dict:
    from climb_assets.core.search.scoring import train_and_score

    started = time.perf_counter()
    scored = train_and_score(
        _WORKER["proxy"], _WORKER["pool"], _WORKER["tokenizer"], _WORKER["targets"], weights, seed
    )
    return (
        {"run": run, **{f"w_{j}": float(w) for j, w in enumerate(weights)}}
        | scored.scores
        | {"seconds": time.perf_counter() - started}
    )


# ------------------------------------------------------------------------------ synthetic


@dataclass
class Synthetic:
    """A smooth objective on the simplex: a quadratic bowl plus a linear tilt."""

    optimum: np.ndarray
    tilt: np.ndarray

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        return -10 * ((weights - self.optimum) ** 2).sum(axis=1) + weights @ self.tilt


def synthetic_runs(
    args: argparse.Namespace,
) -> tuple[np.ndarray, np.ndarray, Synthetic, MixtureConstraints]:
    rng = np.random.default_rng(args.seed)
    prior = rng.dirichlet(np.ones(args.groups))
    constraints = MixtureConstraints.unconstrained(args.groups, prior=prior)
    truth = Synthetic(
        optimum=sample_dirichlet(constraints, 1, rng)[0], tilt=rng.normal(0, 0.3, args.groups)
    )
    weights = mixtures(constraints, args.runs, args.seed)
    clean = truth(weights)
    noisy = clean + rng.normal(0, args.noise * clean.std(), len(clean))
    return weights, noisy, truth, constraints


def synthetic_columns(args: argparse.Namespace) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A table like RegMix's: one validation loss per group plus their mean. Each loss follows a
    data mixing law (Ye et al. 2024), loss_i = c_i + k_i exp(sum_j t_ij w_j): a few related
    groups help, the rest cost a little. In every other column the group's own weight acts as a
    power law instead, (w_i + e_i)^-a_i with a small e_i: the loss falls steeply over the first
    percent of weight and is nearly flat after, as for a small domain (code, math) in RegMix's
    runs. Noise sd `--noise` x each column's sd."""
    rng = np.random.default_rng([args.seed, 17])
    k = args.groups
    constraints = MixtureConstraints.unconstrained(k, prior=rng.dirichlet(np.ones(k)))
    transfer = rng.normal(0.2, 0.2, (k, k)) * (rng.random((k, k)) < 0.7)
    related = rng.random((k, k)) < 0.15
    transfer[related] = -rng.uniform(0.5, 1.5, related.sum())
    own = rng.uniform(1.5, 3.0, k)
    power = np.arange(k) % 2 == 1
    np.fill_diagonal(transfer, np.where(power, 0.0, -own))
    floor, scale = rng.uniform(1.5, 3.5, k), rng.uniform(0.5, 1.5, k)
    offset, exponent = 10 ** rng.uniform(-3, -1.5, k), rng.uniform(0.1, 0.4, k)
    weights = mixtures(constraints, args.runs, args.seed)
    steep = np.where(power, (weights + offset) ** -exponent, 1.0)
    clean = floor + scale * steep * np.exp(weights @ transfer.T)
    noisy = clean + rng.normal(0, 1, clean.shape) * args.noise * clean.std(axis=0)
    columns = {f"group_{i:02d}/loss": noisy[:, i] for i in range(k)}
    return weights, columns | {"mean/loss": noisy.mean(axis=1)}


# ------------------------------------------------------------------------------ statistics


def default_lightgbm(weights: np.ndarray, scores: np.ndarray, seed: int, test: np.ndarray):
    model = lgb.LGBMRegressor(random_state=seed, n_jobs=1, verbosity=-1)  # defaults otherwise
    return model.fit(weights, scores).predict(test)


def regmix_lightgbm(weights: np.ndarray, scores: np.ndarray, seed: int, test: np.ndarray):
    """Plain LightGBM trained longer, RegMix-style: 1000 rounds at learning rate 0.01, defaults
    otherwise (so, like the defaults, no split with fewer than 40 rows)."""
    model = lgb.LGBMRegressor(
        n_estimators=1000, learning_rate=0.01, random_state=seed, n_jobs=1, verbosity=-1
    )
    return model.fit(weights, scores).predict(test)


def ours(settings: PredictorSettings):
    def predict(weights: np.ndarray, scores: np.ndarray, seed: int, test: np.ndarray):
        return fit_predictor(weights, scores, seed, settings=settings).predict(test)

    return predict


def evaluate(
    weights: np.ndarray,
    scores: np.ndarray,
    sizes: list[int],
    repeats: int,
    seed: int,
) -> None:
    models = {
        "ours (bagged, cv rounds)": ours(PredictorSettings()),
        "ours, 1 model": ours(PredictorSettings(ensemble_size=1)),
        "ours, trees only": ours(PredictorSettings(smooth_base=False)),
        "LGBMRegressor() defaults": default_lightgbm,
    }
    print(
        f"\n{len(scores)} runs; {repeats} random subsamples per n; mean (standard error)\n"
        f"{'n':>4}  {'model':26} {'spearman':>15} {'pick pct':>15} {'distinct':>8} "
        f"{'fit s':>6}"
    )
    for n in sizes:
        if len(scores) - n < MIN_HELD_OUT:
            print(f"{n:>4}  skipped: fewer than {MIN_HELD_OUT} runs would be held out")
            continue
        for name, model in models.items():
            runs = subsample_runs(model, weights, scores, n, repeats, seed)
            print(
                f"{n:>4}  {name:26} {_mean(runs['spearman']):>15} {_mean(runs['pick']):>15} "
                f"{np.mean(runs['distinct']):8.2f} {np.mean(runs['seconds']):6.2f}"
            )


def subsample_runs(
    model: Callable[..., np.ndarray],
    weights: np.ndarray,
    scores: np.ndarray,
    n: int,
    repeats: int,
    seed: int,
    maximize: bool = True,
) -> dict[str, list[float]]:
    """Fit `model` on n seeded random runs, `repeats` times, and score its ranking of the rest:
    Spearman (a constant prediction counts as 0), the true percentile of the run it ranks
    best, the share of distinct predictions and the fit time. The subsamples depend on seed,
    n and repeat only, so every model and column sees the same ones."""
    sign = 1.0 if maximize else -1.0
    found: dict[str, list[float]] = {"spearman": [], "pick": [], "distinct": [], "seconds": []}
    for repeat in range(repeats):
        order = np.random.default_rng([seed, n, repeat]).permutation(len(scores))
        train, test = order[:n], order[n:]
        started = time.perf_counter()
        predicted = model(weights[train], scores[train], repeat, weights[test])
        found["seconds"].append(time.perf_counter() - started)
        rho = spearman(predicted, scores[test])
        found["spearman"].append(0.0 if np.isnan(rho) else rho)
        better = sign * scores[test]
        found["pick"].append(100 * float((better <= better[np.argmax(sign * predicted)]).mean()))
        found["distinct"].append(len(np.unique(predicted)) / len(test))
    return found


def evaluate_final_choice(
    weights: np.ndarray,
    scores: np.ndarray,
    truth: Synthetic,
    constraints: MixtureConstraints,
    sizes: list[int],
    repeats: int,
    seed: int,
) -> None:
    """True objective of `choose_final`'s mixture vs the best observed run of the sample."""
    print(
        "\nfinal choice on the true function (top-16 of 5000 Dirichlet draws + the observed "
        "runs, radius 0.3): gain = true(choice) - true(best observed run) in units of the "
        "runs' true std; methods are choose_final's; 'top-16 mean' is best_mixture"
    )
    scale = truth(weights).std()
    for n in sizes:
        if n > len(scores):
            continue
        gains: dict[str, list[float]] = {
            "choose_final": [],
            "compare_to_pool=False": [],
            "top-16 mean": [],
        }
        methods = []
        for repeat in range(repeats):
            train = np.random.default_rng([seed, n, repeat]).permutation(len(scores))[:n]
            predictor = fit_predictor(weights[train], scores[train], repeat)
            pool = sample_dirichlet(constraints, 5000, np.random.default_rng([seed, 99, repeat]))
            choice = choose_final(predictor, pool, weights[train], scores[train], 16, True)
            best_true = truth(choice.best_observed_weights[None])[0]
            mean_only = choose_final(
                predictor, pool, weights[train], scores[train], 16, True, compare_to_pool=False
            )
            picks = {
                "choose_final": choice.mixture,
                "compare_to_pool=False": mean_only.mixture,
                "top-16 mean": best_mixture(predictor, pool, 16, True).mixture,
            }
            for name, mixture in picks.items():
                gains[name].append((truth(mixture[None])[0] - best_true) / scale)
            methods.append((choice.method, mean_only.method))
        text = "  ".join(f"{name} {_mean(values)}" for name, values in gains.items())
        print(f"{n:>4}  gain: {text}")
        for column, name in enumerate(("choose_final", "compare_to_pool=False")):
            used = [pair[column] for pair in methods]
            print(f"      {name} methods: { {m: used.count(m) for m in sorted(set(used))} }")


# ------------------------------------------------------------------------------ many columns

# The predictor's predictions are its member 0's (fitted on every row, with the ridge and the
# rounds chosen on every row), so one member gives the same ranking at an eighth of the cost.
COLUMN_MODELS = {
    "ours": ours(PredictorSettings(ensemble_size=1)),
    "trees only": ours(PredictorSettings(ensemble_size=1, smooth_base=False)),
    "LightGBM defaults": default_lightgbm,
    "LightGBM 1000 x 0.01": regmix_lightgbm,
}


def score_columns(table: pl.DataFrame) -> list[str]:
    """Every metric of the runs, then the objective. A text target's loss is left out: its bits
    per byte is the same loss times a constant, so it ranks runs identically."""
    metrics = ("bits_per_byte", "accuracy", "accuracy_norm", "gold_loss")
    return sorted(c for c in table.columns if c.endswith(metrics)) + ["objective"]


def column_results(
    column: str,
    weights: np.ndarray,
    scores: np.ndarray,
    sizes: list[int],
    repeats: int,
    seed: int,
) -> dict[tuple[int, str], dict[str, list[float]]]:
    """Per (n, model): `subsample_runs` of the column, in its direction."""
    maximize = not column.endswith(LOWER_IS_BETTER)
    return {
        (n, name): subsample_runs(model, weights, scores, n, repeats, seed, maximize)
        for n in sizes
        if len(scores) - n >= MIN_HELD_OUT
        for name, model in COLUMN_MODELS.items()
    }


def evaluate_columns(
    weights: np.ndarray,
    columns: dict[str, np.ndarray],
    sizes: list[int],
    repeats: int,
    seed: int,
    jobs: int,
) -> None:
    """Each score column on its own: mean Spearman (lowest subsample in brackets) per n and
    model, then, per n, on how many columns ours is level with or ahead of the best plain
    LightGBM (level: within one standard error of the paired difference)."""
    with ProcessPoolExecutor(max_workers=jobs) as executor:
        futures = {
            name: executor.submit(column_results, name, weights, values, sizes, repeats, seed)
            for name, values in columns.items()
        }
        results = {name: future.result() for name, future in futures.items()}
    models = list(COLUMN_MODELS)
    print(
        f"\n{len(weights)} runs, {len(columns)} score columns; {repeats} subsamples per n, "
        "the same for every model and column. Spearman: mean over subsamples (lowest)."
    )
    print("| column | n | " + " | ".join(models) + " | ours - best plain |")
    print("|---|---|" + "---|" * (len(models) + 1))
    for name, per_column in results.items():
        for n in sizes:
            if (n, models[0]) not in per_column:
                continue
            cells = []
            for model in models:
                rhos = np.asarray(per_column[(n, model)]["spearman"])
                cells.append(f"{rhos.mean():.3f} ({rhos.min():.2f})")
            print(f"| {name} | {n} | " + " | ".join(cells) + f" | {_lead(per_column, n)} |")
    print(
        "\nper n: columns where ours is level with or ahead of the best plain LightGBM; mean "
        "Spearman over the columns; mean pick percentile (the true percentile of the held-out "
        "run each model ranks first, 100 = the best); columns where ours' lowest subsample is "
        "under 0.5"
    )
    for n in sizes:
        present = [r for r in results.values() if (n, models[0]) in r]
        if not present:
            continue
        level = sum(not _lead(r, n).endswith("behind") for r in present)
        means = {m: np.mean([np.mean(r[(n, m)]["spearman"]) for r in present]) for m in models}
        picks = {m: np.mean([np.mean(r[(n, m)]["pick"]) for r in present]) for m in models}
        low = sum(min(r[(n, "ours")]["spearman"]) < 0.5 for r in present)
        text = ", ".join(f"{m} {value:.3f}" for m, value in means.items())
        pick_text = ", ".join(f"{m} {value:.1f}" for m, value in picks.items())
        print(
            f"{n:>4}: level or ahead on {level} of {len(present)}; mean {text}; pick "
            f"{pick_text}; under 0.5: {low}"
        )


def _lead(per_column: dict, n: int) -> str:
    """Ours minus the better plain LightGBM (by mean Spearman), paired over subsamples."""
    ours_rhos = np.asarray(per_column[(n, "ours")]["spearman"])
    plain = max(
        ("LightGBM defaults", "LightGBM 1000 x 0.01"),
        key=lambda model: np.mean(per_column[(n, model)]["spearman"]),
    )
    difference = ours_rhos - np.asarray(per_column[(n, plain)]["spearman"])
    error = difference.std(ddof=1) / np.sqrt(len(difference)) if len(difference) > 1 else 0.0
    verdict = "behind" if difference.mean() < -error else "level or ahead"
    return f"{difference.mean():+.3f} ± {error:.3f} {verdict}"


def _mean(values: list[float]) -> str:
    values_array = np.asarray(values, dtype=float)
    error = values_array.std(ddof=1) / np.sqrt(len(values_array)) if len(values_array) > 1 else 0
    return f"{values_array.mean():.3f} ({error:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="settings YAML (default: $CLIMB_CONFIG)")
    parser.add_argument("--pool", type=Path, help="proxy pool (default: output_dir/proxy_pool)")
    parser.add_argument("--targets", help="comma-separated target names (default: all)")
    parser.add_argument("--runs", type=int, default=256, help="proxy runs (default 256)")
    parser.add_argument("--tokens", type=int, help="tokens per proxy (default: settings)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per proxy")
    parser.add_argument("--jobs", type=int, default=1, help="proxies trained at once (default 1)")
    parser.add_argument(
        "--domain-targets",
        type=int,
        metavar="N",
        help="add a text target per sample domain, N of its corpus documents each",
    )
    parser.add_argument("--eval-tokens", type=int, help="target tokens scored per text target")
    parser.add_argument(
        "--columns",
        choices=("objective", "all"),
        default="objective",
        help="evaluate the objective (default) or every score column on its own",
    )
    parser.add_argument("--cache", type=Path, help="cache parquet (default: benchmarks/results)")
    parser.add_argument("--build-only", action="store_true", help="train runs, skip statistics")
    parser.add_argument("--synthetic", action="store_true", help="known function, no proxies")
    parser.add_argument("--groups", type=int, default=12, help="synthetic: groups (default 12)")
    parser.add_argument(
        "--noise", type=float, default=0.3, help="synthetic: noise sd / signal sd (default 0.3)"
    )
    parser.add_argument("--sizes", default="16,32,64,112", help="training sizes")
    parser.add_argument("--repeats", type=int, default=20, help="subsamples per size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    if args.synthetic and args.columns == "all":
        weights, by_column = synthetic_columns(args)
        print(f"synthetic mixing-law table: {args.groups} groups, noise sd = {args.noise} x sd")
        evaluate_columns(weights, by_column, sizes, args.repeats, args.seed, args.jobs)
        return
    if args.synthetic:
        weights, scores, truth, constraints = synthetic_runs(args)
        print(f"synthetic: {args.groups} groups, noise sd = {args.noise} x signal sd")
        evaluate(weights, scores, sizes, args.repeats, args.seed)
        evaluate_final_choice(
            weights, scores, truth, constraints, sizes, min(args.repeats, 10), args.seed
        )
        return
    table = build_cache(args, load_settings(args.config))
    if args.build_only:
        return
    columns = sorted((c for c in table.columns if c.startswith("w_")), key=lambda c: int(c[2:]))
    weights = table.select(columns).to_numpy()
    if args.columns == "all":
        scores = {c: table[c].to_numpy() for c in score_columns(table)}
        evaluate_columns(weights, scores, sizes, args.repeats, args.seed, args.jobs)
        return
    evaluate(weights, table["objective"].to_numpy(), sizes, args.repeats, args.seed)


if __name__ == "__main__":
    main()
