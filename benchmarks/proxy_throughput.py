"""Proxy-training throughput against the machine's FLOP-bound limit, for fp32 and bf16.

    .venv/bin/python benchmarks/proxy_throughput.py [--tokens 100000] [--threads N] [--plain]

For the default ProxySettings model and the issue's reference size (vocab 8192, width 128,
2 layers, seq 128), it trains with `train_proxy` on a synthetic Zipf-distributed pool and prints
tokens/s, achieved GFLOP/s (flops_per_token x tokens/s) and the limit a GEMM-bound run would
reach (measured GEMM GFLOP/s / flops_per_token). `--plain` also times a training step with the
ordinary logits + F.cross_entropy loss, to show what the chunked loss saves.

Rough figures, shared 2-vCPU AVX-512/AMX-BF16 machine under load from other jobs, --threads 1
(GEMM 188 GFLOP/s fp32, 1191 bf16), tokens/s:

    model                     fp32 plain  fp32 chunked  bf16 plain  bf16 chunked
    default (vocab 4096)           7.4k        11.8k        10.0k        20.6k
    reference (vocab 8192)         4.6k         7.5k         5.6k        17.2k

bf16 autocast with the chunked loss is the fastest, so it is the CPU `auto` default
(precision.CPU_AUTO_PRECISION). With --threads 2 on the same busy machine every figure fell to
2-3.6k tokens/s: OpenMP threads stall when another process holds the second core.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers

from climb_assets.core.search.pool_writer import build_pool
from climb_assets.core.search.proxy_model import ModelConfig, ProxyLM, flops_per_token
from climb_assets.core.search.proxy_pool import ProxyPool
from climb_assets.core.search.proxy_training import train_proxy
from climb_assets.core.search.tokenizer import EOS_TOKEN
from climb_assets.settings import ProxySettings

REFERENCE = {"vocab_size": 8192, "d_model": 128, "n_layers": 2, "n_heads": 4, "seq_len": 128}


def gemm_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Best-of-3 square matmul rate: the FLOP-bound ceiling for this thread count."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best / 1e9


def synthetic_pool(vocab_size: int, root: Path, n_tokens: int = 400_000) -> ProxyPool:
    """A word-level tokenizer over `vocab_size` ids and Zipf-distributed documents."""
    vocab = {EOS_TOKEN: 0, **{f"w{i}": i for i in range(1, vocab_size)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=EOS_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    rng = np.random.default_rng(0)
    ids = np.minimum(rng.zipf(1.2, size=n_tokens), vocab_size - 1)
    docs = [" ".join(f"w{i}" for i in chunk) for chunk in np.array_split(ids, n_tokens // 500)]
    build_pool({0: docs[::2], 1: docs[1::2]}, tokenizer, root)
    return ProxyPool.open(root)


def plain_step_tokens_per_second(cfg: ModelConfig, precision: str, batch_size: int) -> float:
    """One training step with materialised logits and F.cross_entropy (no accelerate)."""
    model = ProxyLM(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (batch_size, cfg.seq_len + 1))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    for _ in range(10):
        step()
    return 10 * batch_size * cfg.seq_len / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000, help="training tokens per run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--plain", action="store_true", help="also time the unfused loss")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    peaks = {"fp32": gemm_gflops(torch.float32), "bf16": gemm_gflops(torch.bfloat16)}
    print(
        f"threads {torch.get_num_threads()}; GEMM 2048^3: fp32 {peaks['fp32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16']:.0f} GFLOP/s"
    )
    sizes = {
        "default ProxySettings": ProxySettings(),
        "reference (issue)": ProxySettings(**REFERENCE),
    }
    columns = ("params", "MFLOP/tok", "prec", "tok/s", "GFLOP/s", "limit tok/s", "of peak")
    widths = (8, 9, 5, 8, 8, 11, 7)
    print(f"{'model':22} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    with tempfile.TemporaryDirectory() as tmp:
        for name, base in sizes.items():
            pool = synthetic_pool(base.vocab_size, Path(tmp) / name.replace(" ", "_"))
            cfg = ModelConfig.from_settings(base, pool.vocab_size)
            fpt = flops_per_token(cfg)
            for precision in ("fp32", "bf16"):
                settings = base.model_copy(update={"precision": precision})
                warm_up = settings.model_copy(update={"tokens_per_proxy": 10_000})
                train_proxy(pool, {0: 1, 1: 1}, warm_up, seed=0)
                timed = settings.model_copy(update={"tokens_per_proxy": args.tokens})
                run = train_proxy(pool, {0: 1, 1: 1}, timed, seed=0)
                achieved = run.tokens_per_second * fpt / 1e9
                limit = peaks[precision] * 1e9 / fpt
                print(
                    f"{name:22} {run.n_parameters / 1e6:7.2f}M {fpt / 1e6:9.2f} {precision:>5} "
                    f"{run.tokens_per_second:8.0f} {achieved:8.1f} {limit:11.0f} "
                    f"{achieved / peaks[precision]:7.0%}"
                )
                if args.plain:
                    plain = plain_step_tokens_per_second(cfg, precision, base.batch_size)
                    print(
                        f"{'  plain logits + CE':22} {'':8} {'':9} {precision:>5} {plain:8.0f} "
                        f"{plain * fpt / 1e9:8.1f}"
                    )


if __name__ == "__main__":
    main()
