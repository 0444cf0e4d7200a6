"""The straight-through backward returns exactly the standard op's gradients."""

import pytest
import torch
from torch import nn

from yolos_bf16accum.patching import patch_linear
from yolos_bf16accum.ste import bf16acc_attention, standard_attention


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk", [1, 16])
def test_linear_ste_grads_equal_nn_linear(bias, chunk):
    torch.manual_seed(0)
    ref = nn.Linear(48, 24, bias=bias)
    ste = nn.Linear(48, 24, bias=bias)
    ste.load_state_dict(ref.state_dict())
    patch_linear(ste, accum_chunk=chunk, backend="emulation")
    x1 = torch.randn(3, 7, 48, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    gy = torch.randn(3, 7, 24)
    y_ref, y_ste = ref(x1), ste(x2)
    assert y_ste.dtype == torch.float32 and not torch.equal(y_ref, y_ste)  # forward really differs
    assert torch.allclose(y_ref, y_ste, rtol=0, atol=0.05)
    y_ref.backward(gy)
    y_ste.backward(gy)
    assert torch.equal(x1.grad, x2.grad)
    assert torch.equal(ref.weight.grad, ste.weight.grad)
    if bias:
        assert torch.equal(ref.bias.grad, ste.bias.grad)


def test_linear_under_autocast_gives_fp32_master_grads():
    torch.manual_seed(0)
    lin = patch_linear(nn.Linear(32, 16), accum_chunk=16, backend="emulation")
    x = torch.randn(4, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert lin.weight.grad.dtype == torch.float32 and lin.weight.dtype == torch.float32


def test_attention_ste_grads_equal_standard_attention():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, requires_grad=True) for _ in range(3))
    q2, k2, v2 = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    go = torch.randn(2, 3, 9, 8)
    out = bf16acc_attention(q, k, v, 8 ** -0.5, accum_chunk=1, backend="emulation")
    ref = standard_attention(q2, k2, v2, 8 ** -0.5)
    assert not torch.equal(out, ref) and torch.allclose(out, ref, atol=0.05)
    out.backward(go)
    ref.backward(go)
    for a, b in ((q, q2), (k, k2), (v, v2)):
        assert torch.equal(a.grad, b.grad)
