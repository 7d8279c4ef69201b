"""Does bootstrapping beat one-shot regression at an equal proxy budget? CLIMB's iterative
search (the default 24/16/8 proxies, seed repeats and the final race) against one round of as
many proxies (RegMix's random draws, or the search's own first-round design), then the
predictor's choice and race, and against the best of as many random draws with no predictor.

    .venv/bin/python benchmarks/search_ablation.py       # shakespeare; pydocs+kjv+shakespeare
    .venv/bin/python benchmarks/search_ablation.py --targets kjv news+wiki --eval-seeds 5

As `search_quality.py`, held-out sample documents of each target's domains leave the corpus and
become a text target; the corpus is clustered and pooled once (`climb`'s own stages up to
`proxy_pool`, in a Dagster home under benchmarks/results/search_ablation/). Each design then runs
the product's search (`climb_assets.core.search.ablation`) on each target, and every chosen
mixture, with natural and the best single super-cluster for reference, is trained as an
evaluation model at equal tokens on the same seeds. The table gives each design's proxies, the
best proxy score it saw, how it chose, the evaluation objective (minus bits per byte on the
target, higher is better; mean ± std over seeds) and its difference from the iterative design
at equal seeds (mean, and the std of the paired difference). Proxies and evaluation models are
checkpointed: a rerun continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from climb_assets.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_quality import ROOT, slug, split_corpus  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "search_ablation"
REFERENCES = ("natural", "best_single")


def write_config(dest: Path, targets: dict[str, Path], args: argparse.Namespace) -> Path:
    """Default settings but the corpus, the targets (the first is the one the stages up to the
    pool are run with; they do not depend on it) and the evaluation's size."""
    evaluation: dict = {"seeds": args.eval_seeds}
    if args.eval_tokens:
        evaluation["tokens"] = args.eval_tokens
    if args.eval_proxy_size:
        from climb_assets.settings import Settings

        proxy = Settings().proxy
        evaluation |= {"d_model": proxy.d_model, "n_layers": proxy.n_layers}
    config = {
        "output_dir": str(dest / "outputs"),
        "corpus": {"path": str(dest / "corpus")},
        "targets": [
            {"name": slug(spec), "kind": "text", "path": str(path)}
            for spec, path in list(targets.items())[:1]
        ],
        "evaluation": evaluation,
    }
    if args.threads:
        config["proxy"] = {"cpu_threads": args.threads}
    path = dest / "climb.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prepare(config: Path) -> None:
    """`climb run`'s stages up to the proxy pool, in its own Dagster home (a subprocess, so
    DAGSTER_HOME and the config apply to it alone)."""
    home = config.parent / "dagster_home"
    home.mkdir(exist_ok=True)
    instance = (ROOT / "dagster.yaml").read_text().replace(".dagster_home/", f"{home}/")
    (home / "dagster.yaml").write_text(instance)
    env = dict(os.environ, CLIMB_CONFIG=str(config), DAGSTER_HOME=str(home), HF_HUB_OFFLINE="1")
    command = [sys.executable, __file__, "--prepare-config", str(config)]
    subprocess.run(command, cwd=ROOT, env=env, check=True)


def run_stages_to_pool(config: Path) -> None:
    from climb_assets.cli.runner import project_instance, run_pipeline
    from climb_assets.definitions import build_definitions
    from climb_assets.defs.graph import stages
    from climb_assets.settings import load_settings

    settings = load_settings(config)
    defs = build_definitions(settings)
    plan = stages(defs)
    last = next(i for i, s in enumerate(plan) if "proxy_pool" in s.assets)
    with project_instance() as instance:
        run_pipeline(defs, settings, instance, plan=plan[: last + 1])


def target_settings(config: Path, target: str, path: Path) -> Settings:
    """The benchmark's settings with `target` (a text target at `path`) as the only target."""
    from climb_assets.settings import TargetSettings, load_settings

    settings = load_settings(config)
    only = TargetSettings(name=target, kind="text", path=path)
    return settings.model_copy(update={"targets": [only]})


def run_designs(config: Path, target: str, path: Path, chosen: list[str]) -> dict[str, dict]:
    """Every design on one target; each result is kept in <target>/<design>.json."""
    from climb_assets.core.search.ablation import equal_budget_designs, run_design
    from climb_assets.core.search.mixtures import constraint_budget
    from climb_assets.core.search.proxy_jobs import (
        ProxyTrainer,
        proxy_run_key,
        with_absolute_target_paths,
    )
    from climb_assets.store import Layout, corpus_token_counts

    settings = target_settings(config, target, path)
    layout = Layout(settings.output_dir)
    trainer_settings = with_absolute_target_paths(settings)
    found: dict[str, dict] = {}
    for design in equal_budget_designs(settings.search):
        if design.name not in chosen:
            continue
        record = config.parent / target / f"{design.name}.json"
        if record.exists():
            found[design.name] = json.loads(record.read_text())
            continue
        trainer = ProxyTrainer(
            trainer_settings,
            layout.proxy_pool.resolve(),
            (config.parent / target / design.name).resolve(),
            proxy_run_key(trainer_settings, layout.proxy_pool),
        )
        started = time.perf_counter()
        result = run_design(
            design,
            settings,
            corpus_token_counts(layout, settings),
            constraint_budget(settings),
            trainer,
            log=lambda line: print(f"{target}: {line}", flush=True),
        )
        found[design.name] = {
            "weights": result.weights.tolist(),
            "how": result.how,
            "proxies": result.proxies,
            "best_observed": result.best_observed,
            "rounds": design.search.proxies_per_iteration,
            "seconds": time.perf_counter() - started,
            "history": result.history.select("candidate_id", "score", pl.col("^w_.*$")).to_dicts(),
        }
        record.write_text(json.dumps(found[design.name]))
    return found


def evaluate(config: Path, target: str, path: Path, designs: dict[str, dict]) -> list[dict]:
    """Each design's mixture and the references as evaluation models on the same seeds."""
    from climb_assets.core.search import evaluation as ev
    from climb_assets.core.search.evaluation_run import train_mixtures
    from climb_assets.core.search.mixtures import build_constraints, constraint_budget
    from climb_assets.store import Layout, corpus_token_counts

    settings = target_settings(config, target, path)
    layout = Layout(settings.output_dir)
    counts = corpus_token_counts(layout, settings)
    history = pl.DataFrame(designs["iterative"]["history"])
    columns = [f"w_{i}" for i in range(len(counts))]
    constraints = build_constraints(counts, settings.search, constraint_budget(settings))
    reference = ev.baseline_mixtures(
        np.asarray(designs["iterative"]["weights"]),
        history.select(columns).to_numpy(),
        history["score"].to_numpy(),
        counts,
        constraints,
        settings.seed,
    )
    # "optimal" is the iterative design: the margins below are the others' distance from it.
    mixtures = {
        ev.OPTIMAL: reference[ev.OPTIMAL],
        **{name: np.asarray(d["weights"]) for name, d in designs.items() if name != "iterative"},
        **{name: reference[name] for name in REFERENCES},
    }
    if "one-shot" in designs:  # what its predictor and race add over its best random draw
        drawn = pl.DataFrame(designs["one-shot"]["history"])
        best = drawn.sort("score").select(columns).row(-1)
        mixtures[f"best of one-shot's {drawn.height} draws"] = np.asarray(best)
    trained = train_mixtures(
        settings,
        mixtures,
        layout.proxy_pool,
        layout.proxy_pool_manifest.read_text(),
        config.parent / target / "evaluation",
        log=lambda line: print(f"{target}: {line}", flush=True),
    )
    stats = {
        row["mixture"]: ev.Stat(row["n"], row["objective_mean"], row["objective_std"])
        for row in ev.summarize(trained.runs, ["objective"]).iter_rows(named=True)
    }
    margins = {m.baseline: m for m in ev.margins(stats, trained.same, ev.paired_stds(trained.runs))}
    rows = []
    for name, s in stats.items():
        design = "iterative" if name == ev.OPTIMAL else name
        d = designs.get(design, {})
        m = margins.get(name)
        rows.append(
            {
                "target": target,
                "design": design,
                "proxies": d.get("proxies"),
                "best_proxy": d.get("best_observed"),
                "how": d.get("how", "reference"),
                "mean": s.mean,
                "std": s.std,
                "vs_iterative": None if m is None else -m.margin,
                "paired_std": None if m is None else m.paired_std,
                "seconds": d.get("seconds"),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    header = [
        "target",
        "design",
        "proxies",
        "best proxy seen",
        "chosen by",
        "evaluation objective",
        "minus iterative (paired ± std)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in rows:
        delta = (
            "" if r["vs_iterative"] is None else f"{r['vs_iterative']:+.3f} ± {_f(r['paired_std'])}"
        )
        best = "" if r["best_proxy"] is None else f"{r['best_proxy']:.3f}"
        cells = [
            r["target"],
            r["design"],
            "" if r["proxies"] is None else str(r["proxies"]),
            best,
            r["how"],
            f"{r['mean']:.3f} ± {_f(r['std'])}",
            delta,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--targets",
        nargs="+",
        default=["shakespeare", "pydocs+kjv+shakespeare"],
        help="one target per entry; a+b is one target of both domains' held-out documents",
    )
    parser.add_argument(
        "--designs",
        nargs="+",
        default=["iterative", "one-shot", "one-shot-cover", "best-of-random"],
        help="which designs to run (iterative is always run: the others are compared to it)",
    )
    parser.add_argument("--held-out", type=int, default=40, help="target documents per domain")
    parser.add_argument("--seed", type=int, default=0, help="which documents are held out")
    parser.add_argument("--threads", type=int, help="torch threads per proxy (proxy.cpu_threads)")
    parser.add_argument("--eval-seeds", type=int, default=3)
    parser.add_argument("--eval-tokens", type=int, help="default: evaluation.tokens")
    parser.add_argument(
        "--eval-proxy-size", action="store_true", help="evaluation models of the proxies' shape"
    )
    parser.add_argument("--prepare-config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare_config:
        run_stages_to_pool(args.prepare_config)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dest = RESULTS
    dest.mkdir(parents=True, exist_ok=True)
    targets = split_corpus(args.targets, args.held_out, args.seed, dest)
    config = write_config(dest, targets, args)
    started = time.perf_counter()
    prepare(config)
    print(f"stages up to proxy_pool: {time.perf_counter() - started:.0f} s", flush=True)
    chosen = sorted({"iterative", *args.designs})
    rows = []
    for spec, path in targets.items():
        target = slug(spec)
        (dest / target).mkdir(exist_ok=True)
        designs = run_designs(config, target, path, chosen)
        rows += evaluate(config, target, path, designs)
        print("\n" + markdown(rows), flush=True)
    (dest / "table.md").write_text(markdown(rows) + "\n")
    print(f"\n{time.perf_counter() - started:.0f} s in all; table in {dest / 'table.md'}")


if __name__ == "__main__":
    main()
