"""A tiny search shared by the tests of a bootstrap round and of the final race: three
super-clusters of distinct sentences, proxies that train in about a second."""

from pathlib import Path

from climb_assets.core.search.pool_writer import build_pool
from climb_assets.core.search.tokenizer import train_bpe
from climb_assets.settings import Settings
from climb_assets_tests.conftest import SAMPLE_TARGETS

TEXTS = {
    0: [f"the cat number {i} sat on the mat and looked at the dog." for i in range(120)],
    1: [f"a ship of {i} sails crossed the grey sea under the moon." for i in range(120)],
    2: [f"in the year {i} the market sold bread, cheese and apples." for i in range(120)],
}
TOKEN_COUNTS = {0: 100_000, 1: 100_000, 2: 100_000}
BUDGET_TOKENS = 200_000
SETTINGS = Settings.model_validate(
    {
        "seed": 3,
        "proxy": {
            "d_model": 32,
            "n_layers": 1,
            "n_heads": 2,
            "seq_len": 32,
            "batch_size": 8,
            "tokens_per_proxy": 2048,
            "eval_max_tokens": 1024,
            "precision": "fp32",
            "cpu_threads": 1,
        },
        "search": {
            "proxies_per_iteration": [5, 4],
            "candidate_pool_size": 200,
            "top_k_for_sampling": 4,
            "cv_folds": 2,
            "seed_repeats": 2,  # off by default; the round's tests measure them
        },
        "targets": [
            {
                "name": "text",
                "kind": "text",
                "path": str(SAMPLE_TARGETS / "held_out_text.jsonl"),
                "max_examples": 10,
            }
        ],
    }
)


def build_tiny_pool(root: Path) -> Path:
    """The three super-clusters tokenized into a proxy pool at `root`."""
    tokenizer = train_bpe([t for texts in TEXTS.values() for t in texts], vocab_size=300)
    build_pool(TEXTS, tokenizer, root)
    return root
