import pytest
import torch
import torch.nn.functional as F

from climb_assets.core.search.proxy_model import (
    ModelConfig,
    ProxyLM,
    chunked_linear_cross_entropy,
    flops_per_token,
)
from climb_assets.core.shared.precision import cpu_has_native_bf16


def test_chunked_cross_entropy_matches_plain_loss_and_gradients() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(1000, 16, requires_grad=True)  # not a multiple of the chunk size
    weight = torch.randn(5000, 16, requires_grad=True)  # 5000 logits/row -> 419 rows/chunk
    targets = torch.randint(0, 5000, (1000,))
    plain = F.cross_entropy(hidden @ weight.T, targets)
    plain_grads = torch.autograd.grad(plain, [hidden, weight])
    fused = chunked_linear_cross_entropy(hidden, weight, targets)
    fused_grads = torch.autograd.grad(2 * fused, [hidden, weight])  # chain rule through backward
    torch.testing.assert_close(fused, plain)
    for got, want in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, 2 * want)


def test_model_is_causal_and_ties_embeddings() -> None:
    torch.manual_seed(0)
    model = ProxyLM(ModelConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=2, seq_len=8))
    ids = torch.randint(0, 50, (2, 8))
    changed = ids.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 50
    logits, logits_changed = model(ids), model(changed)
    assert logits.shape == (2, 8, 50)
    torch.testing.assert_close(logits[:, :5], logits_changed[:, :5])
    assert not torch.allclose(logits[:, 5:], logits_changed[:, 5:])
    expected = 50 * 16 + 8 * 16 + 2 * (12 * 16**2 + 4 * 16) + 2 * 16  # emb, pos, blocks, ln_f
    assert model.n_parameters() == expected
    loss = model(ids[:, :-1], ids[:, 1:])
    torch.testing.assert_close(
        loss, F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
    )
    with pytest.raises(ValueError, match="exceeds seq_len"):
        model(torch.zeros((1, 9), dtype=torch.long))


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="CPU lacks native bf16")
def test_bf16_autocast_stays_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = ProxyLM(ModelConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=2, seq_len=16))
    ids = torch.randint(0, 300, (4, 17))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits_bf16 = model(ids[:, :-1]).float()
        loss_bf16 = model(ids[:, :-1], ids[:, 1:])
    torch.testing.assert_close(logits_bf16, model(ids[:, :-1]), atol=0.02, rtol=0.02)
    torch.testing.assert_close(loss_bf16, model(ids[:, :-1], ids[:, 1:]), atol=0.01, rtol=0.01)


def test_flops_per_token_by_hand() -> None:
    cfg = ModelConfig(vocab_size=8192, d_model=128, n_layers=2, n_heads=4, seq_len=128)
    matmul_params = 2 * (3 + 1 + 4 + 4) * 128 * 128 + 128 * 8192
    assert flops_per_token(cfg) == 6 * matmul_params + 12 * 2 * 128 * 128
