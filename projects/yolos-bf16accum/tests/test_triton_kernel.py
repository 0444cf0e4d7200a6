"""The Triton kernel equals the emulation bit for bit (CPU: the Triton interpreter; CUDA: compiled)."""

import pytest
import torch

from yolos_bf16accum.emulation import accum_matmul, bf16acc_matmul
from yolos_bf16accum.spec import AccumSpec

triton = pytest.importorskip("triton")
from yolos_bf16accum.triton_kernels import triton_accum_matmul, triton_bf16acc_matmul  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def bits(t: torch.Tensor) -> torch.Tensor:
    # + 0.0 maps -0 to +0 (the only value whose sign the two could legitimately differ in)
    return (t.float() + 0.0).view(torch.int32)


# Tiny shapes: the interpreter runs every k step of every tile in Python (~0.2-0.5 s each here).
CASES = [  # (batch, M, K, N, chunk)
    ((), 20, 37, 24, 1),
    ((), 33, 64, 17, 16),
    ((2,), 16, 70, 9, 32),   # K not a multiple of the chunk: zero-padded last chunk
    ((), 8, 100, 8, 64),
    ((2, 3), 9, 8, 9, 1),    # attention-like [B, heads, S, D] @ [B, heads, D, S]
]


@pytest.mark.parametrize("batch,M,K,N,chunk", CASES)
def test_interpreter_kernel_is_bit_identical(batch, M, K, N, chunk):
    g = torch.Generator().manual_seed(M * K + N)
    a = torch.randn(*batch, M, K, generator=g)
    b = torch.randn(*batch, K, N, generator=g) * 3
    got = triton_bf16acc_matmul(a, b, chunk, interpret=True)
    want = bf16acc_matmul(a, b, chunk)
    assert got.dtype == want.dtype == torch.bfloat16 and got.shape == want.shape
    assert torch.equal(bits(got), bits(want))


def test_interpreter_kernel_swamps_like_the_definition():
    ones = torch.ones(1, 300)
    col = torch.ones(300, 1)
    assert triton_bf16acc_matmul(ones, col, 1, interpret=True).item() == 256.0
    assert triton_bf16acc_matmul(ones, col, 32, interpret=True).item() == 300.0


def test_interpreter_kernel_broadcasts_weights():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 20, generator=g)
    w = torch.randn(20, 10, generator=g)
    assert torch.equal(bits(triton_bf16acc_matmul(x, w, 16, interpret=True)), bits(bf16acc_matmul(x, w, 16)))


def test_compiled_kernel_refuses_cpu_tensors():
    with pytest.raises(RuntimeError, match="CUDA"):
        triton_bf16acc_matmul(torch.ones(2, 2), torch.ones(2, 2), 1, interpret=False)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("chunk", [1, 16, 32, 64])
@pytest.mark.parametrize("shape", [(1, 300, 192, 768), (3, 257, 64, 257), (2, 129, 1125, 64)])
def test_cuda_kernel_is_bit_identical(chunk, shape):
    nb, M, K, N = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(nb, M, K, device="cuda", generator=g)
    b = torch.randn(nb, K, N, device="cuda", generator=g)
    got = triton_bf16acc_matmul(a, b, chunk)
    want = bf16acc_matmul(a, b, chunk)  # emulation on the GPU
    assert torch.equal(bits(got), bits(want))
    assert torch.equal(bits(got).cpu(), bits(bf16acc_matmul(a.cpu(), b.cpu(), chunk)))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_patched_model_trains(tiny_model, tiny_batch):
    from yolos_bf16accum.patching import patch_all

    model = tiny_model.cuda()
    patch_all(model, accum_chunk=32, backend="triton")
    pixels, labels = tiny_batch
    labels = [{k: v.cuda() for k, v in t.items()} for t in labels]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(pixel_values=pixels.cuda(), labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.vit.encoder.layer[0].attention.attention.query.weight.grad.abs().sum() > 0


def test_kernel_rounding_equals_torch_on_every_bit_pattern_family():
    """The kernel's RNE on fp32 bit patterns vs torch's fp32 -> bf16 conversion (c10's RNE, NaN -> 0x7FC0):
    NVIDIA's canonical NaN 0x7FFFFFFF (which the bare formula turned into -0.0), signalling / negative NaNs,
    ±inf, the overflow edge, ties, ±0, subnormals, and 20,000 random patterns."""
    from yolos_bf16accum.triton_kernels import round_bits_bf16

    special = [0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001, 0xFFC00000, 0x7FC00000, 0x7F800000, 0xFF800000, 0x7F7FFFFF,
               0x7F7F8000, 0x7F7F7FFF, 0x3F808000, 0x3F818000, 0x3F807FFF, 0x00000000, 0x80000000, 0x00000001,
               0x00008000, 0x00018000, 0x007FFFFF, 0x807FFFFF, 0x00800000]
    rnd = torch.randint(0, 2**32, (20000,), generator=torch.Generator().manual_seed(0), dtype=torch.int64)
    patterns = torch.cat([torch.tensor(special, dtype=torch.int64), rnd])
    got = round_bits_bf16(patterns) >> 16
    as_f32 = patterns.to(torch.uint32).view(torch.int32).view(torch.float32)
    want = as_f32.to(torch.bfloat16).view(torch.int16).to(torch.int64) & 0xFFFF
    assert int(got[0]) == 0x7FC0                       # the canonical CUDA NaN stays a NaN
    # torch's own NaN bits differ by path (this CPU's vector code gives 0xFFFF for every NaN): a NaN must
    # give the kernel's one quiet NaN, everything else the same bits as torch
    is_nan = ((want & 0x7F80) == 0x7F80) & ((want & 0x007F) != 0)
    assert (got[is_nan] == 0x7FC0).all()
    mismatch = ((got != want) & ~is_nan).nonzero().flatten()
    assert mismatch.numel() == 0, [hex(int(patterns[i])) for i in mismatch[:10]]


def _bf16_from_bits(values):
    return torch.tensor(values, dtype=torch.int64).to(torch.int16).view(torch.bfloat16)


def test_kernel_equals_emulation_on_subnormals_and_specials():
    """bf16 subnormal operands and results, ±0, ±inf, NaN (bit-for-bit, NaN as the same quiet pattern)."""
    sub = [0x0001, 0x0003, 0x007F, 0x8001, 0x8040, 0x0080, 0x0000, 0x8000]        # subnormals, min normal, ±0
    g = torch.Generator().manual_seed(1)
    a = torch.cat([_bf16_from_bits(sub), torch.randn(8, generator=g).bfloat16()]).reshape(4, 4)
    b = torch.cat([torch.randn(8, generator=g).bfloat16() * 1e-2, _bf16_from_bits(sub)]).reshape(4, 4)
    specials = torch.tensor([[float("inf"), 1.0, 0.0, -1.0], [float("-inf"), 2.0, 3.0, 0.0],
                             [float("nan"), 1.0, 1.0, 1.0], [1e-38, 1e-38, 0.5, 2.0]]).bfloat16()
    for x, y in ((a, b), (a, b.T.contiguous()), (specials, specials.T.contiguous()), (specials, a)):
        for chunk in (1, 4):
            # the definition (the loop): the fast paths may differ from it in the sign of a zero when the
            # running sum underflows to -0, which subnormal operands (outside the exact range) provoke
            ref = accum_matmul(x, y, chunk, prefer="loop")
            out = triton_bf16acc_matmul(x, y, chunk, interpret=True)
            # NaN where the definition has NaN (as the kernel's quiet NaN); the same bits everywhere else
            assert torch.equal(out.isnan(), ref.isnan()), (chunk, out, ref)
            assert (out.view(torch.int16)[out.isnan()] == 0x7FC0).all()
            keep = ~ref.isnan()
            assert torch.equal(out.view(torch.int16)[keep], ref.view(torch.int16)[keep]), (chunk, out, ref)


def test_kernel_equals_emulation_at_the_edges_of_the_exact_product_range():
    """Products just inside fp32's normal range (2^-126 and just under 2^128): still exact, so kernel and
    emulation agree bit for bit; the documented limit of the bit-identity claim (emulation docstring)."""
    a = torch.tensor([[2.0**-63, 2.0**63, -(2.0**-63), 1.5 * 2.0**63]]).bfloat16()
    b = torch.tensor([[2.0**-63], [1.9921875 * 2.0**64], [2.0**-63], [2.0**-64]]).bfloat16()
    prods = a.float()[0] * b.float()[:, 0]
    assert ((prods.abs() >= 2.0**-126) & (prods.abs() < 2.0**128)).all()     # every product in range
    for chunk in (1, 2, 4):
        ref = bf16acc_matmul(a, b, chunk)
        out = triton_bf16acc_matmul(a, b, chunk, interpret=True)
        assert torch.equal(out.view(torch.int16), ref.view(torch.int16)), chunk


# ---- every format, mode and chunk: one rounding definition, two implementations ----------------------

SPECS = [AccumSpec(chunk=c, acc=f, rounding=m, seed=11)
         for f in ("bf16", "fp16", "e5m2", "e4m3fn", "e6m7") for m in ("rne", "rtz", "sr") for c in (1, 16)]
SPECS += [AccumSpec(chunk=8, operands="fp16", acc="fp16", bias="init"),
          AccumSpec(chunk=4, operands="e4m3fn", acc="e5m2", rounding="sr", bias="init", seed=-3),
          AccumSpec(chunk=16, acc="fp32")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_interpreter_kernel_equals_emulation_for_every_format_mode_and_chunk(spec):
    g = torch.Generator().manual_seed(spec.chunk * 7 + len(spec.label))
    a = torch.randn(2, 9, 37, generator=g)            # K = 37: a short last chunk
    b = torch.randn(37, 12, generator=g) * 4
    bias = torch.randn(12, generator=g) if spec.bias == "init" else None
    got = triton_accum_matmul(a, b, spec, bias_init=bias, interpret=True)
    for prefer in ("auto", "loop"):
        want = accum_matmul(a, b, spec, bias_init=bias, prefer=prefer)
        assert got.dtype == want.dtype and got.shape == want.shape == (2, 9, 12)
        assert torch.equal(bits(got), bits(want)), (spec.label, prefer)


@pytest.mark.parametrize("mode", ["rne", "rtz", "sr"])
@pytest.mark.parametrize("name", ["bf16", "fp16", "e5m2", "e4m3fn", "e6m7", "e3m2"])
def test_kernel_rounding_equals_the_torch_definition(name, mode):
    """``_round_bits`` (Triton, int64) vs ``formats.round_bits`` (torch) on 4,000 stress patterns: every
    binade of the format and beyond, ties, specials, with the same random bits."""
    from yolos_bf16accum.formats import parse_format, random_bits, round_bits
    from yolos_bf16accum.triton_kernels import round_bits_kernel

    fmt = parse_format(name)
    g = torch.Generator().manual_seed(5)
    rnd = torch.randint(0, 2 ** 32, (3000,), generator=g, dtype=torch.int64)
    near = (torch.randint(fmt.emin - fmt.man_bits - 4 + 127, min(fmt.emax + 129, 255), (1000,), generator=g) << 23) \
        | torch.randint(0, 1 << 23, (1000,), generator=g)
    special = torch.tensor([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FFFFFFF, 0x7FC00000, fmt.max_bits,
                            fmt.max_bits + 1, 0x00000001, 0x00800000], dtype=torch.int64)
    u = torch.cat([rnd, near, special])
    rb = random_bits(3, torch.arange(u.numel(), dtype=torch.int64), 1)
    assert torch.equal(round_bits_kernel(u, fmt, mode, rb), round_bits(u, fmt, mode, rb))


def test_stochastic_rounding_sums_ones_without_swamping():
    """Per-MAC accumulation of 2048 ones: RNE and RTZ stall (bf16 at 256, e5m2 at 8); SR keeps the sum
    unbiased, and kernel and emulation draw the same bits."""
    ones, col = torch.ones(4, 2048), torch.ones(2048, 1)
    assert accum_matmul(ones, col, AccumSpec(1, rounding="rtz")).unique().tolist() == [256.0]
    assert accum_matmul(ones, col, AccumSpec(1, acc="e5m2")).unique().tolist() == [8.0]
    assert accum_matmul(ones, col, AccumSpec(1, acc="fp16")).unique().tolist() == [2048.0]
    sr = accum_matmul(ones, col, AccumSpec(1, rounding="sr", seed=1)).float()
    assert sr.min() > 1024 and abs(sr.mean().item() - 2048) < 512
    small = AccumSpec(1, rounding="sr", seed=2)
    assert torch.equal(triton_accum_matmul(ones[:, :300], col[:300], small, interpret=True),
                       accum_matmul(ones[:, :300], col[:300], small))


def test_tensor_core_variant_is_within_tolerance_of_the_definition():
    """The ``tl.dot`` variant (interpreter: fp32 dot, its own summation order) stays within the rounding
    of the accumulator: at most a few bf16 ulps of the result's magnitude from the exact kernel."""
    from yolos_bf16accum.triton_kernels import triton_dot_matmul

    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(2, 24, 96, generator=g), torch.randn(96, 20, generator=g)
    for spec in (AccumSpec(32), AccumSpec(16, acc="fp16", rounding="rtz")):
        got = triton_dot_matmul(a, b, spec, interpret=True).float()
        want = accum_matmul(a, b, spec).float()
        scale = want.abs().amax(-1, keepdim=True)
        assert ((got - want).abs() <= 4 * 2 ** -8 * scale).all(), spec.label
    with pytest.raises(ValueError, match="multiple of 16"):
        triton_dot_matmul(a, b, AccumSpec(8), interpret=True)


@pytest.mark.parametrize("arch", [90, 120])
def test_kernels_compile_for_hopper_and_blackwell_without_a_gpu(arch):
    """The compiled path (never run here: no GPU) type-checks and lowers to a cubin for sm_90 (H100/H200)
    and sm_120 (RTX 5090); the tensor-core variant contains MMA instructions, the exact kernel none."""
    from yolos_bf16accum.triton_kernels import compile_for

    exact = compile_for("exact", arch, AccumSpec(1, acc="fp16", rounding="sr", bias="init"))
    dot = compile_for("dot", arch, AccumSpec(32))
    dot16 = compile_for("dot", arch, AccumSpec(32, operands="fp16", acc="fp16"))
    for asm in (exact, dot, dot16):
        assert asm["cubin"] and f"sm_{arch}" in asm["ptx"]
    assert "mma" in dot["ptx"] and "mma" not in exact["ptx"]
    assert "bf16" in dot["ptx"] and "f16" in dot16["ptx"].replace("bf16", "")   # fp16 operands stay fp16


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("spec", SPECS[::3], ids=lambda s: s.label)
def test_cuda_kernel_equals_emulation_for_formats_and_modes(spec):
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(2, 130, 200, device="cuda", generator=g)
    b = torch.randn(200, 70, device="cuda", generator=g)
    assert torch.equal(bits(triton_accum_matmul(a, b, spec)), bits(accum_matmul(a.cpu(), b.cpu(), spec)).cuda())


def test_tensor_core_operand_type_holds_the_operand_format():
    from yolos_bf16accum.triton_kernels import dot_input_type

    assert dot_input_type(AccumSpec(32)) == 1
    assert dot_input_type(AccumSpec(32, operands="fp16")) == 2
    assert dot_input_type(AccumSpec(32, operands="e5m2")) == 2 and dot_input_type(AccumSpec(32, operands="e4m3fn")) == 2
    with pytest.raises(ValueError, match="bias_init"):
        triton_accum_matmul(torch.ones(2, 4), torch.ones(4, 3), AccumSpec(4, bias="init"),
                            bias_init=torch.ones(1), interpret=True)
