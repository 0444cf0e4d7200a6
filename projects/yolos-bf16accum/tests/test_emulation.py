"""The torch emulation against a float64 reference: rounding, swamping and error growth with K and chunk."""

import pytest
import torch

from yolos_bf16accum.emulation import bf16acc_linear, bf16acc_matmul, reference_matmul_fp64, round_to_bf16


def rel_err(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


def test_round_to_bf16_is_nearest_even():
    # bf16 has 8 significant bits: between 256 and 258 the spacing is 2
    x = torch.tensor([257.0, 259.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -257.0])
    assert round_to_bf16(x).tolist() == [256.0, 260.0, 1.0, 1.0 + 2 ** -6, -256.0]


def test_per_mac_swamps_long_same_sign_sums_and_chunks_do_not():
    ones = torch.ones(1, 4096)
    col = torch.ones(4096, 1)
    # 256 + 1 rounds back to 256 (tie to even): a per-MAC bf16 accumulator stops growing there
    assert bf16acc_matmul(ones, col, 1).item() == 256.0
    assert bf16acc_matmul(ones, col, 32).item() == 4096.0
    assert bf16acc_matmul(ones, col, 16).item() == 4096.0


def test_error_grows_with_k_and_shrinks_with_chunk():
    g = torch.Generator().manual_seed(0)
    errs = {}
    for K in (64, 768):
        a = torch.randn(64, K, generator=g)
        b = torch.randn(K, 64, generator=g)
        ref = reference_matmul_fp64(a, b)
        for chunk in (1, 16, 32, 64):
            errs[K, chunk] = rel_err(bf16acc_matmul(a, b, chunk), ref)
        errs[K, "fp32"] = rel_err(round_to_bf16(a) @ round_to_bf16(b), ref)
    for K in (64, 768):
        assert errs[K, "fp32"] < 1e-6  # fp32 accumulation of bf16 products is nearly exact
        assert errs[K, 1] > errs[K, 16] > errs[K, 32] >= errs[K, 64] * 0.9
        assert errs[K, 64] > 4e-4  # the final bf16 rounding alone costs ~u/sqrt(3)
    # per-MAC error grows ~ sqrt(K) * u: x12 in K gives ~x3.5; the notes measured 9.5e-3 -> 3.3e-2
    assert 2.0 < errs[768, 1] / errs[64, 1] < 6.0
    assert 5e-3 < errs[64, 1] < 2e-2 and 2e-2 < errs[768, 1] < 5e-2


def test_same_sign_inputs_make_per_mac_much_worse():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(32, 768, generator=g).abs()
    b = torch.randn(768, 32, generator=g).abs()
    ref = reference_matmul_fp64(a, b)
    assert rel_err(bf16acc_matmul(a, b, 1), ref) > 0.1  # swamping: ~1.6e-1 in the notes
    assert rel_err(bf16acc_matmul(a, b, 32), ref) < 0.01


def test_linear_matches_definition_and_broadcasts():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 40, generator=g)
    w = torch.randn(12, 40, generator=g)
    b = torch.randn(12, generator=g)
    y = bf16acc_linear(x, w, b, 16)
    assert y.shape == (2, 5, 12) and y.dtype == torch.bfloat16
    expect = (bf16acc_matmul(x, w.t(), 16).float() + round_to_bf16(b)).bfloat16()
    assert torch.equal(y, expect)
    batched = bf16acc_matmul(x, w.t(), 16)
    assert torch.equal(batched[1], bf16acc_matmul(x[1], w.t(), 16))


def test_emulation_ignores_autocast():
    x = torch.randn(8, 40)
    w = torch.randn(40, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = bf16acc_matmul(x, w, 1)
    assert torch.equal(inside, bf16acc_matmul(x, w, 1))


@pytest.mark.parametrize("bad", [0, -3, 1.5, None])
def test_bad_chunk_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="accum_chunk"):
        bf16acc_matmul(torch.ones(2, 2), torch.ones(2, 2), bad)
