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


# ---- the fast paths are the definition --------------------------------------------------------------

from yolos_bf16accum import fastpath  # noqa: E402
from yolos_bf16accum.emulation import accum_matmul, path_for  # noqa: E402
from yolos_bf16accum.spec import AccumSpec  # noqa: E402

FAST_SPECS = [AccumSpec(1), AccumSpec(32), AccumSpec(16), AccumSpec(64), AccumSpec(7),
              AccumSpec(32, acc="fp16"), AccumSpec(16, acc="e5m2", rounding="rtz"), AccumSpec(32, rounding="sr", seed=4),
              AccumSpec(32, acc="fp32"), AccumSpec(1, bias="init"), AccumSpec(32, bias="init"),
              AccumSpec(16, acc="e6m7", operands="fp16", bias="init")]


def int_bits(t):
    return (t.float() + 0.0).view(torch.int32)


@pytest.mark.parametrize("spec", FAST_SPECS, ids=lambda s: s.label)
def test_fast_paths_equal_the_loop(spec):
    g = torch.Generator().manual_seed(spec.chunk)
    a = torch.randn(3, 40, 200, generator=g) * torch.exp2(torch.randint(-8, 8, (3, 40, 1), generator=g).float())
    b = torch.randn(200, 24, generator=g)
    a[0, 0] = 0.0                                    # an all-zero row
    bias = torch.randn(24, generator=g) if spec.bias == "init" else None
    path = path_for(spec, 3, 40, 200, 24)
    if spec.chunk == 1:
        assert path == ("addcmul-bf16" if spec.is_seed_default else "loop")
    else:   # bmm where this BLAS passed the probe (it does on this CI's OpenBLAS/MKL), else the loop
        verdict = [v for k, v in fastpath.PROBES.items() if k[-5:] == (3, 40, 24, 200, spec.chunk)]
        assert verdict and path == ("bmm" if verdict[0] else "loop")
    fast = accum_matmul(a, b, spec, bias_init=bias)
    exact = accum_matmul(a, b, spec, bias_init=bias, prefer="loop")
    assert torch.equal(int_bits(fast), int_bits(exact))
    assert fast.dtype == (torch.bfloat16 if spec.acc == "bf16" else torch.float32)


def test_probe_rejects_a_blas_that_sums_out_of_order(monkeypatch):
    """A chunk sum in any other order (here: reversed k) fails the probe, the loop runs, and the result is
    still the definition's."""
    def reversed_sum(a, b, k0, chunk, out=None):
        at = a[:, :, k0:k0 + chunk].flip(-1).transpose(1, 2).contiguous()
        bb = b[:, k0:k0 + chunk].flip(1)
        return fastpath.k_order_sum(at, bb, 0, at.shape[1]) if out is None else out.copy_(
            fastpath.k_order_sum(at, bb, 0, at.shape[1]))

    monkeypatch.setattr(fastpath, "PROBES", {})
    monkeypatch.setattr(fastpath, "chunk_sum", reversed_sum)
    g = torch.Generator().manual_seed(9)
    a, b = torch.randn(16, 96, generator=g), torch.randn(96, 8, generator=g)
    assert path_for(32, 1, 16, 96, 8) == "loop"
    assert list(fastpath.PROBES.values()) == [False]
    assert torch.equal(int_bits(accum_matmul(a, b, 32)), int_bits(accum_matmul(a, b, 32, prefer="loop")))


def test_probe_passes_on_this_blas_and_is_cached(monkeypatch):
    monkeypatch.setattr(fastpath, "PROBES", {})
    assert fastpath.bmm_is_k_order(1, 64, 48, 192, 32, "cpu")
    assert fastpath.bmm_is_k_order(1, 64, 48, 192, 32, "cpu")
    assert len(fastpath.PROBES) == 1


def test_bias_init_starts_the_sum_and_differs_from_the_epilogue():
    """init: s0 = RN(bias) and every chunk rounds on top of it; epilogue: one rounding of sum + bias."""
    from yolos_bf16accum.emulation import accum_linear

    x = torch.full((1, 64), 1.0)
    w = torch.full((1, 64), 1.0)
    bias = torch.tensor([256.0])
    init = accum_linear(x, w, bias, AccumSpec(1, bias="init")).item()
    epi = accum_linear(x, w, bias, AccumSpec(1, bias="epilogue")).item()
    assert init == 256.0      # 256 + 1 rounds back to 256 at every product: the bias swamps the sum
    assert epi == 320.0       # 64 exact, then 64 + 256 in one rounding


def test_narrow_accumulators_are_less_accurate_than_wider_ones():
    """Error vs a float64 reference, per-MAC, K = 768: e5m2 >> bf16 > fp16 > e6m12-ish; chunking helps each."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(32, 768, generator=g), torch.randn(768, 32, generator=g)
    ref = reference_matmul_fp64(a, b)
    err = {f: rel_err(accum_matmul(a, b, AccumSpec(1, acc=f)), ref) for f in ("e5m2", "bf16", "fp16", "e8m12")}
    assert err["e5m2"] > err["bf16"] > err["fp16"] > err["e8m12"]
    assert rel_err(accum_matmul(a, b, AccumSpec(32, acc="fp16")), ref) < err["fp16"]
    sr = rel_err(accum_matmul(a, b, AccumSpec(1, rounding="sr")), ref)
    rtz = rel_err(accum_matmul(a, b, AccumSpec(1, rounding="rtz")), ref)
    assert rtz > err["bf16"] and sr < rtz     # truncation is biased; SR is not


def test_scratch_first_made_in_inference_mode_serves_training(monkeypatch):
    """The reused scratch is first allocated during an evaluation (inference mode) and then written by a
    training step: it must not be an inference tensor."""
    monkeypatch.setattr(fastpath, "_SCRATCH", {})
    a, b = torch.randn(20, 64), torch.randn(64, 8)
    with torch.inference_mode():
        inside = accum_matmul(a, b, 32)
    assert torch.equal(accum_matmul(a, b, 32), inside)


def test_probe_catches_a_sum_that_starts_from_the_first_product(monkeypatch):
    """A BLAS that seeds its accumulator with the first product (not +0) turns an all -0 row into -0:
    the probe's -0 rows catch it for long chunks too."""
    def first_product_start(a, b, k0, chunk, out=None):
        at = a[:, :, k0:k0 + chunk].transpose(1, 2).contiguous()
        bb = b[:, k0:k0 + chunk]
        c = at[:, 0, :, None] * bb[:, 0, None, :]
        for k in range(1, at.shape[1]):
            c = c + at[:, k, :, None] * bb[:, k, None, :]
        return c if out is None else out.copy_(c)

    for chunk in (4, 16, 32):
        monkeypatch.setattr(fastpath, "PROBES", {})
        monkeypatch.setattr(fastpath, "chunk_sum", first_product_start)
        assert not fastpath.bmm_is_k_order(1, 16, 8, 96, chunk, "cpu"), chunk


def test_accum_matmul_in_grad_mode_is_safe_and_bias_shape_checked(monkeypatch):
    monkeypatch.setattr(fastpath, "_SCRATCH", {})
    a = torch.randn(20, 64, requires_grad=True)
    b = torch.randn(64, 8, requires_grad=True)
    for chunk in (1, 32):
        y = accum_matmul(a, b, chunk)
        assert not y.requires_grad
    assert all(not t.requires_grad for t in fastpath._SCRATCH.values())   # no caller graph kept
    with pytest.raises(ValueError, match="bias_init"):
        accum_matmul(a, b, AccumSpec(4, bias="init"), bias_init=torch.ones(20, 8))
