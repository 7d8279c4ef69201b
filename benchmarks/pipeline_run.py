"""Wall time and peak memory of `climb run` on the bundled sample, and on the sample doubled.

    .venv/bin/python benchmarks/pipeline_run.py            # the sample as shipped
    .venv/bin/python benchmarks/pipeline_run.py --scale 2  # every document twice (the copy's
                                                          # sentences rotated so dedup keeps it)
    .venv/bin/python benchmarks/pipeline_run.py --set search.rung_fraction=1 \
        --set embedding.max_seq_length=256 --name before    # settings changed, dotted keys

Each run uses a fresh output folder and a fresh Dagster home under benchmarks/results/ and
prints the wall time, the peak resident memory of the process tree, the stage timings, and the
proxy tokens the search trained (rounds, seed repeats and final race; machine-independent).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def rotate_sentences(text: str) -> str:
    """A different text of the same length and vocabulary: first sentence moved to the end."""
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return " ".join(parts[1:] + parts[:1]) if len(parts) > 1 else text[::-1]


def scaled_corpus(scale: int, dest: Path) -> Path:
    """The sample corpus with `scale - 1` extra rotated copies of every document, as Parquet."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "data" / "corpus").iterdir()):
        frame = (
            pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ndjson(path)
        ).select("id", "text", "source")
        copies = [frame]
        for copy in range(1, scale):
            copies.append(
                frame.with_columns(
                    pl.col("id") + f"-copy{copy}",
                    pl.col("text").map_elements(rotate_sentences, return_dtype=pl.String),
                )
            )
        pl.concat(copies).write_parquet(dest / (path.name.split(".")[0] + ".parquet"))
    return dest


def setting_override(text: str) -> tuple[list[str], object]:
    """'search.rung_fraction=1' -> (['search', 'rung_fraction'], 1); values are JSON, else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(config: dict, overrides: list[tuple[list[str], object]]) -> dict:
    for path, value in overrides:
        section = config
        for part in path[:-1]:
            section = section.setdefault(part, {})
        section[path[-1]] = value
    return config


def proxy_tokens(outputs: Path) -> dict[str, int]:
    """Tokens the search's proxies trained, from the runs it wrote: each round's candidates
    (a candidate stopped at its rung counts its rung's tokens), seed repeats, final race."""
    bootstrap = outputs / "bootstrap"
    found = {"rounds": 0, "repeats": 0, "race": 0}
    for path in sorted(bootstrap.glob("iter-*/runs.parquet")):
        runs = pl.read_parquet(path)
        found["rounds"] += int(runs["proxy_tokens"].sum())
        repeats = pl.read_parquet(path.with_name("seed_repeats.parquet")).height
        found["repeats"] += repeats * int(runs["proxy_tokens"].max())
    optimal = json.loads((outputs / "optimal_mixture.json").read_text())
    full = max(
        int(pl.read_parquet(p)["proxy_tokens"].max()) for p in bootstrap.glob("iter-*/runs.parquet")
    )
    raced = [row for row in optimal["final_race"] or [] if row["raced_as"] == row["finalist"]]
    found["race"] = sum(int(row["seeds"]) for row in raced) * full
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument(
        "--set",
        dest="overrides",
        type=setting_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting, by dotted key (repeatable)",
    )
    parser.add_argument("--name", help="results folder name (default run-x<scale>)")
    args = parser.parse_args()
    work = RESULTS / (args.name or f"run-x{args.scale}")
    shutil.rmtree(work, ignore_errors=True)
    home = work / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    config = {"output_dir": str(work / "outputs")}
    if args.scale > 1:
        config["corpus"] = {"path": str(scaled_corpus(args.scale, work / "corpus"))}
    (work / "climb.yaml").write_text(json.dumps(apply_overrides(config, args.overrides)))
    env = {**os.environ, "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "climb"), "--config", str(work / "climb.yaml"), "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(proc.stdout[-4000:], proc.stderr[-2000:] if proc.returncode else "", sep="\n")
    print(
        f"scale x{args.scale}: exit {proc.returncode}, wall {wall:.1f} s, "
        f"peak RSS {peak_mib:.0f} MiB (largest single process)"
    )
    if proc.returncode == 0:
        tokens = proxy_tokens(work / "outputs")
        print(
            "proxy tokens trained: "
            + ", ".join(f"{name} {count:,}" for name, count in tokens.items())
            + f"; total {sum(tokens.values()):,}"
        )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
