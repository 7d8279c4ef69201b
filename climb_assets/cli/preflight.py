"""What `climb run` checks and says before any step: settings it can verify now (corpus folder,
targets, encoder, device), shards whose first bytes cannot be read or lack the text field, the
corpus's size against the disk, and how long ingest and embedding will take here.

Each check fails in one line naming the setting or file, before hours of work would end in it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from climb_assets.defs.failures import one_line
from climb_assets.settings import Settings


def preflight(settings: Settings) -> None:
    """What can be checked before any step: the corpus folder, the targets and the encoder."""
    check_corpus_folder(settings)
    check_targets(settings)
    check_encoder(settings)


def check_corpus_folder(settings: Settings) -> None:
    from climb_assets.settings import SettingsError

    path = Path(settings.corpus.path)
    if path.exists() and not path.is_dir():
        raise SettingsError(f"corpus.path {path} is a file, not a folder of shard files")


class ShardPreviewError(ValueError):
    """A shard whose first bytes cannot be read (not the format its name says, say)."""


def _named_shard_errors(
    settings: Settings, shards: list[str], look: Callable[[Path], object]
) -> None:
    """Run look(path) on each shard, raising ShardPreviewError naming the one it fails on."""
    for shard in shards:
        path = Path(settings.corpus.path) / shard
        try:
            look(path)
        except Exception as err:  # any reader's error: only the message is shown
            raise ShardPreviewError(
                f"corpus shard {path}: cannot read it ({type(err).__name__}: {one_line(str(err))})"
            ) from err


def first_record_fields(path: Path) -> list[str] | None:
    """The fields of a shard's first record (a Parquet file's columns), or None when it has
    none or cannot be read: the ingest step then says why."""
    import json

    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        with _open_text(path, name) as fh:
            line = next((line for line in fh if line.strip()), None)
        value = json.loads(line) if line is not None else None
    except Exception:  # noqa: BLE001 - only a hint: the ingest step reports unreadable files
        return None
    return [str(key) for key in value] if isinstance(value, dict) else None


def _open_text(path: Path, name: str):  # noqa: ANN202 - a text stream
    import gzip
    import io

    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if name.endswith(".zst"):
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True)
        return io.TextIOWrapper(reader, encoding="utf-8")
    return path.open(encoding="utf-8")


def text_field_warnings(settings: Settings, shards: list[str]) -> list[str]:
    """A warning per shard whose first record lacks corpus.text_field, naming its fields."""
    field = settings.corpus.text_field
    warnings = []
    for shard in shards:
        fields = first_record_fields(Path(settings.corpus.path) / shard)
        if fields is not None and field not in fields:
            warnings.append(
                f"warning: {shard}: corpus.text_field {field!r} is not a field of its first "
                f"record (fields: {', '.join(fields) or 'none'}); its records will be rejected"
            )
    return warnings


def check_encoder(settings: Settings) -> None:
    """The encoder must load offline and on the device asked for: say so now, not minutes into
    the embedding step."""
    from climb_assets.core.clustering.encoder import PACKAGED_MODEL
    from climb_assets.core.shared.precision import resolve_device

    model = settings.embedding.model
    if model != PACKAGED_MODEL and not Path(model).is_dir() and not _in_hf_cache(model):
        raise FileNotFoundError(
            f"embedding.model {model!r} is neither {PACKAGED_MODEL!r} (the packaged model), a "
            "folder, nor a model in the Hugging Face cache (nothing is downloaded)"
        )
    if settings.embedding.device != "auto":
        resolve_device(settings.embedding.device)  # raises when the device is not there


def _in_hf_cache(model: str) -> bool:
    """True when `model` names a model repository in the local Hugging Face cache."""
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        return False  # a path, and not an existing folder
    try:
        from huggingface_hub import try_to_load_from_cache

        # sentence-transformers also looks a bare name up under its own organisation
        names = [model] if "/" in model else [model, f"sentence-transformers/{model}"]
        return any(isinstance(try_to_load_from_cache(n, "config.json"), str) for n in names)
    except (ImportError, ValueError):  # not a valid repository name
        return False


def check_targets(settings: Settings) -> None:
    """Parse every target file now, so a malformed one fails the run before hours of embedding
    and proxy training, with an error naming the file and line."""
    from climb_assets.core.search.targets import load_target

    for target in [*settings.targets, *settings.evaluation.targets]:
        load_target(target)


def check_corpus_fits(settings: Settings, shards: list[str]) -> str:
    """The corpus's size, from a bounded look at its shards; raises when its outputs would not
    fit on the output folder's disk, before hours of work end in a full disk."""
    from climb_assets.core.corpus.estimate import (
        OutputPlan,
        disk_shortfall,
        estimate_corpus,
        format_bytes,
    )
    from climb_assets.core.search.mixtures import pool_token_limit

    try:
        estimate = estimate_corpus(settings.corpus.path / shard for shard in shards)
    except Exception:
        _named_shard_errors(settings, shards, lambda path: estimate_corpus([path]))
        raise
    plan = OutputPlan(
        embedding_dimension(settings), pool_token_limit(settings), settings.dataset.token_budget
    )
    if problem := disk_shortfall(estimate, plan, Path(settings.output_dir)):
        raise OSError(problem)
    return f"{estimate.describe()}; outputs about {format_bytes(estimate.output_bytes(plan))}"


def describe_shard_work(settings: Settings, shards: list[str], sample: int = 256) -> str:
    """How long ingest and embedding of `shards` will take on this machine, from their size and
    the speed measured on a few of their documents (the encoder loaded here is the one the
    embedding steps of this process use, so measuring costs little more than the sample)."""
    import time

    from climb_assets.core.corpus.estimate import (
        estimate_corpus,
        format_duration,
        sample_texts,
    )

    todo = estimate_corpus(settings.corpus.path / shard for shard in shards)
    texts: list[str] = []
    field = settings.corpus.text_field
    _named_shard_errors(
        settings, shards[:1], lambda p: texts.extend(sample_texts(p, field, sample))
    )
    line = f"to process: {len(shards)} shard(s), about {todo.documents:,} documents"
    if not texts:
        return line
    started = time.perf_counter()
    _ingest_sample(texts, settings)
    ingest = len(texts) / max(time.perf_counter() - started, 1e-9)
    line += f"; ingest about {format_duration(todo.documents / ingest)} ({ingest:,.0f} docs/s)"
    if settings.execution.backend != "local":
        return line + "; embedding on Ray"
    embed = _embedding_rate(texts[:32], settings)
    return (
        line + f", embedding about {format_duration(todo.documents / embed)} ({embed:,.1f} docs/s)"
    )


def _ingest_sample(texts: list[str], settings: Settings) -> None:
    from climb_assets.core.corpus.documents import normalize_text
    from climb_assets.core.corpus.quality import quality_signals
    from climb_assets.defs.assets.corpus import token_counter_for

    normalized = [normalize_text(text) for text in texts]
    token_counter_for(settings.embedding.model)(normalized)
    quality_signals(normalized)


def _embedding_rate(texts: list[str], settings: Settings) -> float:
    import time

    from climb_assets.core.clustering.embedding import encode
    from climb_assets.defs.assets.clustering import shared_encoder

    model = shared_encoder(settings.embedding)  # loaded before the clock: the steps reuse it
    encode(model, texts[:4], settings.embedding.batch_size)  # the first call warms kernels up
    started = time.perf_counter()
    encode(model, texts, settings.embedding.batch_size)
    return len(texts) / max(time.perf_counter() - started, 1e-9)


def embedding_dimension(settings: Settings) -> int:
    """The encoder's width from its config.json, without loading it; 768 when unknown."""
    import json

    from climb_assets.core.clustering.encoder import model_location

    try:
        config = Path(model_location(settings.embedding.model)) / "config.json"
        return int(json.loads(config.read_text())["hidden_size"])
    except (OSError, KeyError, TypeError, ValueError, ImportError):
        return 768
