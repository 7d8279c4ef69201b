"""Device and precision choices for the proxy trainer and the encoder."""

from __future__ import annotations

import pytest
import torch

from climb_assets.core.shared.precision import (
    PrecisionError,
    cpu_has_native_bf16,
    encoder_precision,
    proxy_precision,
    resolve_device,
)


def test_proxy_precision() -> None:
    cpu = torch.device("cpu")
    assert proxy_precision("fp32", cpu) == "fp32"
    assert proxy_precision("auto", cpu) == ("bf16" if cpu_has_native_bf16() else "fp32")
    with pytest.raises(ValueError, match="precision"):
        proxy_precision("fp16", cpu)


def test_encoder_precision() -> None:
    assert encoder_precision("auto", "cuda") == "fp16"
    assert encoder_precision("auto", "cuda:1") == "fp16"
    assert encoder_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert encoder_precision("fp32", "cuda") == "fp32"
    with pytest.raises(PrecisionError, match="embedding.precision"):
        encoder_precision("int4", "cpu")


def test_resolve_device() -> None:
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda > 1:
        assert resolve_device("cuda:1") == "cuda:1"
    else:  # refused up front, naming the setting, rather than deep inside a step
        with pytest.raises(PrecisionError, match=r"embedding.device: 'cuda:1' but"):
            resolve_device("cuda:1")
    with pytest.raises(PrecisionError, match=r"embedding.device: 'cuda:x'"):
        resolve_device("cuda:x")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
