"""Does the search find a better mixture than the obvious ones, at equal tokens, on data it has
never seen? Targets made of held-out sample documents of one domain or several.

    .venv/bin/python benchmarks/search_quality.py                      # pydocs, shakespeare, kjv
    .venv/bin/python benchmarks/search_quality.py --domains news film --jobs 1
    .venv/bin/python benchmarks/search_quality.py --domains pydocs+kjv+shakespeare
    .venv/bin/python benchmarks/search_quality.py --domains 'pydocs*3+kjv' news+wiki
    .venv/bin/python benchmarks/search_quality.py --set proxy.tokens_per_proxy=150000 \
        --name fewer-tokens      # settings changed (dotted keys), results in their own folder

The bundled sample's document ids start with their source (news-, pydocs-, kjv-, ...). For each
domain, `--held-out` of its documents are taken out of the corpus (the same documents for every
target of one call, so its runs share one corpus; naming other domains changes the corpus, and
with it the clusters) and become that domain's text target. A target
`a+b+c` is the union of those domains' held-out documents: one target that needs several
domains, where the best single super-cluster within the caps is far from the optimum (with
one-domain targets and pure super-clusters it is near it); `a*3+b` weights the domains
unequally (three times as many of a's documents as of b's). Each target
then gets its own `climb run --evaluate` with default settings except the corpus and targets
(each run in its own output folder and Dagster home under benchmarks/results/search_quality/),
and the script prints, per target, the evaluation table (objective = minus the target's bits per
byte, mean ± std over the evaluation seeds) and the optimal mixture's margin over each baseline.
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

import polars as pl
import yaml

from climb_assets.core.search.final_race import describe_standings
from climb_assets.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_run import apply_overrides, setting_override  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "search_quality"
BASELINES = ("natural", "uniform", "best_single", "best_observed", "random")


def sample_documents() -> pl.DataFrame:
    """id, text and domain of every document of the bundled sample (all six shard formats)."""
    from climb_assets.core.corpus.documents import documents_frame
    from climb_assets.settings import CorpusSettings

    corpus = CorpusSettings()
    frames = []
    for path in sorted((ROOT / "data" / "corpus").iterdir()):
        shard = documents_frame(path, path.name, corpus, lambda texts: [len(t) for t in texts])
        frames.append(shard.select(pl.col("doc_id").alias("id"), "text"))
    docs = pl.concat(frames)
    return docs.with_columns(pl.col("id").str.extract(r"^([a-z]+)", 1).alias("domain"))


def parts(spec: str) -> list[str]:
    """The domains a target spec names: `pydocs`, `pydocs+kjv` or `pydocs*3+kjv`."""
    return list(shares(spec))


def shares(spec: str) -> dict[str, float]:
    """Each domain of a spec with its weight: `pydocs*3+kjv` gives pydocs three times kjv's
    held-out documents (the largest weight gets all `--held-out` of its domain's)."""
    found = {}
    for part in spec.split("+"):
        domain, _, weight = part.partition("*")
        found[domain] = float(weight or 1)
        if found[domain] <= 0:
            raise SystemExit(f"target {spec!r}: weight {weight!r} of {domain} must be positive")
    return found


def slug(spec: str) -> str:
    """A spec as a file and target name: '*' would make a path a glob pattern."""
    return spec.replace("*", "x")


def target_documents(spec: str, chosen: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """A spec's held-out documents: the first share of each domain's, by its weight."""
    weights = shares(spec)
    top = max(weights.values())
    return pl.concat(
        [chosen[d].head(max(1, round(chosen[d].height * w / top))) for d, w in weights.items()]
    )


def split_corpus(specs: list[str], held_out: int, seed: int, dest: Path) -> dict[str, Path]:
    """Write the corpus without the held-out documents and one target file per spec."""
    docs = sample_documents()
    chosen: dict[str, pl.DataFrame] = {}
    for domain in sorted({d for spec in specs for d in parts(spec)}):
        pool = docs.filter(pl.col("domain") == domain)
        if pool.height < 2 * held_out:
            raise SystemExit(f"domain {domain!r} has {pool.height} documents: too few to hold out")
        # A domain's held-out documents depend on the domain and seed alone, so calls naming the
        # same domains (alone or joined by +) hold out the same documents and share one corpus.
        chosen[domain] = pool.sample(held_out, seed=seed, shuffle=True)
    (dest / "targets").mkdir(parents=True, exist_ok=True)
    targets: dict[str, Path] = {}
    for spec in specs:
        targets[spec] = dest / "targets" / f"{slug(spec)}.jsonl"
        target_documents(spec, chosen).select("text").write_ndjson(targets[spec])
    taken = pl.concat([frame["id"] for frame in chosen.values()])
    kept = docs.filter(~pl.col("id").is_in(taken.implode()))
    (dest / "corpus").mkdir(parents=True, exist_ok=True)
    kept.select("id", "text").write_parquet(dest / "corpus" / "sample.parquet")
    counts = kept.group_by("domain").len().sort("domain")
    print(
        f"corpus: {kept.height} documents ({dict(counts.iter_rows())}); held out {held_out} "
        f"per target domain"
    )
    return targets


def write_config(domain: str, target: Path, dest: Path, args: argparse.Namespace) -> Path:
    run_dir = dest / slug(domain)
    run_dir.mkdir(parents=True, exist_ok=True)
    config: dict = {
        "output_dir": str(run_dir / "outputs"),
        "corpus": {"path": str(dest / "corpus")},
        "targets": [{"name": slug(domain), "kind": "text", "path": str(target)}],
        "evaluation": {"seeds": args.eval_seeds},
    }
    if args.eval_tokens:
        config["evaluation"]["tokens"] = args.eval_tokens
    if args.eval_proxy_size:  # the proxies' shape: a quicker check than the larger default
        proxy = Settings().proxy
        config["evaluation"] |= {"d_model": proxy.d_model, "n_layers": proxy.n_layers}
    if args.proxies:
        config["search"] = {"proxies_per_iteration": args.proxies}
    if args.threads:
        config["proxy"] = {"cpu_threads": args.threads}
    apply_overrides(config, args.set)
    path = run_dir / "climb.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_run(domain: str, config: Path, evaluate_only: bool) -> subprocess.Popen:
    home = config.parent / "dagster_home"
    home.mkdir(exist_ok=True)
    # The project's dagster.yaml keeps the instance under ./.dagster_home, relative to the working
    # directory: every run here has that same one, so each gets its own folders instead.
    instance = (ROOT / "dagster.yaml").read_text().replace(".dagster_home/", f"{home}/")
    (home / "dagster.yaml").write_text(instance)
    env = dict(os.environ, CLIMB_CONFIG=str(config), DAGSTER_HOME=str(home), HF_HUB_OFFLINE="1")
    log = (config.parent / "run.log").open("a")
    command = [sys.executable, "-m", "climb_assets.cli.main", "run", "--evaluate"]
    if evaluate_only:  # the search is done: only (re)train the evaluation models, no instance
        command = [sys.executable, __file__, "--evaluate-config", str(config)]
    print(f"{domain}: {' '.join(command[1:])} (log {config.parent / 'run.log'})")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def majority_domains(outputs: Path) -> dict[int, tuple[str, float]]:
    """Super-cluster -> its majority domain and that domain's share of its documents."""
    from climb_assets.store import ASSIGNMENTS, Layout

    assigned = pl.concat([pl.read_parquet(p) for p in sorted((outputs / ASSIGNMENTS).iterdir())])
    mapping = pl.read_parquet(Layout(outputs).super_cluster_map)
    docs = assigned.join(mapping.filter(pl.col("status") == "kept"), on="cluster")
    docs = docs.with_columns(pl.col("doc_id").str.extract(r"^([a-z]+)", 1).alias("domain"))
    shares = (
        docs.group_by("super_cluster", "domain")
        .len()
        .with_columns((pl.col("len") / pl.col("len").sum().over("super_cluster")).alias("share"))
    )
    top = shares.sort("share", descending=True).group_by("super_cluster").first()
    return {
        row["super_cluster"]: (row["domain"], row["share"]) for row in top.iter_rows(named=True)
    }


def weight_by_domain(weights: list[float], majority: dict[int, tuple[str, float]]) -> str:
    """A mixture's weight summed over the super-clusters each domain dominates."""
    totals: dict[str, float] = {}
    for cluster, weight in enumerate(weights):
        domain = majority.get(cluster, ("no documents", 0.0))[0]
        totals[domain] = totals.get(domain, 0.0) + weight
    return ", ".join(f"{d} {w:.2f}" for d, w in sorted(totals.items(), key=lambda x: -x[1]) if w)


def evaluate(config: Path) -> None:
    """The mixture_evaluation asset's computation on a finished search, outside Dagster."""
    from climb_assets.core.shared.identity import search_identity
    from climb_assets.defs.assets.evaluation import evaluate as evaluate_search
    from climb_assets.settings import load_settings
    from climb_assets.store import Layout

    settings = load_settings(config)
    layout = Layout(settings.output_dir)
    identity = search_identity(layout, "search_quality", print)
    evaluate_search(settings, layout, identity, lambda line: print(line, flush=True))


def report(domain: str, run_dir: Path) -> list[dict]:
    from climb_assets.store import Layout

    outputs = run_dir / "outputs"
    summary = json.loads(Layout(outputs).evaluation_summary.read_text())
    optimal = json.loads(Layout(outputs).optimal_mixture.read_text())
    mixtures = summary["mixtures"]
    majority = majority_domains(outputs)
    dominated = {c: share for c, (d, share) in majority.items() if d in parts(domain)}
    on_domain = sum(optimal["weights"][str(c)] for c in dominated)
    purity = ", ".join(
        f"{c}: {majority[c][0]} {share:.0%}" for c, share in sorted(dominated.items())
    )
    print(
        f"\n{domain}: super-clusters dominated by {' or '.join(parts(domain))} (majority share): "
        f"{purity or 'none'}; the optimal mixture puts {on_domain:.3f} of its weight on them "
        f"({optimal.get('choice_method')})"
    )
    if optimal.get("final_race"):
        print(f"{domain}: {describe_standings(optimal['final_race'])}")
    print(
        f"\n{domain}: objective = -bits per byte on held-out {domain} documents "
        f"({len(summary['seeds'])} seeds, {summary['tokens_per_model']:,} tokens per model; "
        f"search seed noise {optimal.get('seed_noise')})"
    )
    rows = []
    for name in summary["order"]:
        entry = mixtures[name]
        mean, std = entry["objective_mean"], entry["objective_std"]
        same = f" (same as {entry['same_as']})" if entry["same_as"] else ""
        by_domain = weight_by_domain(entry["weights"], majority)
        print(f"  {name:14} {mean:8.4f} ± {std:.4f}{same}  ({by_domain})")
        rows.append(
            {"domain": domain, "mixture": name, "mean": mean, "std": std, "on_domain": on_domain}
        )
    for margin in summary["margins"]:
        verdict = "beaten" if margin["beaten"] else "NOT beaten"
        print(
            f"  optimal - {margin['baseline']:14} {margin['margin']:+.4f} "
            f"(spread {margin['spread']:.4f}, paired {margin.get('paired_std') or math.nan:.4f}): "
            f"{verdict}"
        )
    return rows


def markdown(rows: list[dict]) -> str:
    """The README table: one row per domain, one column per mixture, mean ± std."""
    frame = pl.DataFrame(rows)
    names = ["optimal", *BASELINES]
    header = ["target domain", *names, "optimal's weight on the domain's super-clusters"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for domain in frame["domain"].unique(maintain_order=True):
        part = {r["mixture"]: r for r in frame.filter(pl.col("domain") == domain).to_dicts()}
        cells = [f"{part[n]['mean']:.3f} ± {part[n]['std']:.3f}" for n in names if n in part]
        cells.append(f"{part['optimal']['on_domain']:.2f}")
        lines.append(f"| {domain} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--domains",
        nargs="+",
        default=["pydocs", "shakespeare", "kjv"],
        help="one target per entry; a+b is one target of both domains' held-out documents, "
        "a*3+b weights a three times b",
    )
    parser.add_argument("--held-out", type=int, default=40, help="target documents per domain")
    parser.add_argument("--seed", type=int, default=0, help="which documents are held out")
    parser.add_argument("--jobs", type=int, default=2, help="targets run at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--eval-seeds", type=int, default=3)
    parser.add_argument("--eval-tokens", type=int, help="default: evaluation.tokens")
    parser.add_argument("--proxies", type=int, nargs="+", help="search.proxies_per_iteration")
    parser.add_argument(
        "--eval-proxy-size", action="store_true", help="evaluation models of the proxies' shape"
    )
    parser.add_argument(
        "--evaluate-only", action="store_true", help="reuse finished searches, evaluate again"
    )
    parser.add_argument("--report-only", action="store_true", help="print finished runs")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        type=setting_override,
        metavar="KEY=VALUE",
        help="a setting for every run, dotted (search.seed_repeats=0); repeatable",
    )
    parser.add_argument(
        "--name", default="", help="results under benchmarks/results/search_quality/NAME"
    )
    parser.add_argument("--evaluate-config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evaluate_config:
        evaluate(args.evaluate_config)
        return
    dest = RESULTS / args.name if args.name else RESULTS
    if not args.report_only:
        if args.evaluate_only:
            targets = {d: dest / "targets" / f"{slug(d)}.jsonl" for d in args.domains}
        else:
            targets = split_corpus(args.domains, args.held_out, args.seed, dest)
        configs = {d: write_config(d, targets[d], dest, args) for d in args.domains}
        started, waiting, running = time.perf_counter(), list(args.domains), []
        while waiting or running:
            while waiting and len(running) < args.jobs:
                domain = waiting.pop(0)
                process = start_run(domain, configs[domain], args.evaluate_only)
                running.append((domain, process))
            time.sleep(2)
            for domain, process in list(running):
                if process.poll() is not None:
                    running.remove((domain, process))
                    print(
                        f"{domain}: exit {process.returncode} after "
                        f"{time.perf_counter() - started:.0f} s"
                    )
    rows = []
    for domain in args.domains:
        rows += report(domain, dest / slug(domain))
    print("\n" + markdown(rows))


if __name__ == "__main__":
    main()
