"""Triton kernels for reduced-precision-accumulating batched matmuls, bit-identical to :mod:`.emulation`.

Why the exact kernel looks the way it does (the notes, section 5, have the measurements):

* NVIDIA tensor cores have no bf16 accumulator and Triton rejects ``tl.dot(..., out_dtype=tl.bfloat16)``,
  so the running sum is an fp32 register tile rounded to the accumulator format's *values* by integer
  arithmetic on its bit pattern. bf16 RNE takes the three-op formula (add ``0x7FFF + lsb``, clear the
  low 16 bits; NaN kept as 0x7FC00000: the bare formula turned NVIDIA's canonical NaN 0x7FFFFFFF into
  -0.0). Every other format and mode runs ``_round_bits``, the same int64 steps as
  :func:`yolos_bf16accum.formats.round_bits` (one definition, written once for torch and once here),
  with stochastic rounding's bits from the same counter hash (``_mix32``) of (seed, output index, chunk).
* No bf16 value goes through a Triton float conversion: the wrapper rounds the operands to their format
  in torch and passes fp32 (exactly representable values), and the result comes back as fp32 holding
  the accumulator format's values (the wrapper narrows bf16 in torch, exactly). Triton 3.9's interpreter
  converts bf16 subnormals wrongly and computes garbage for bf16 ``+``/``*``/``tl.dot``; nothing here
  depends on them, which is what makes the CPU interpreter path representative.
* Products are accumulated one k at a time with CUDA-core FMAs (``c += a_k * b_k``) rather than by
  ``tl.dot``: the product of two operands with <= 11-bit mantissas is exact in fp32, so an FMA equals
  multiply-then-add, and the k order is the emulation's. The cost of exactness: no tensor cores.
* ``triton_dot_matmul`` is the tensor-core variant: one ``tl.dot`` (fp32 accumulate) per chunk, then the
  same rounding between chunks. An MMA sums a chunk in its own order, so it is checked against the
  emulation within a tolerance, not bit for bit.

The interpreter functions are built directly (``InterpretedFunction``), so CPU tensors use the interpreter
without anyone setting ``TRITON_INTERPRET``; CUDA tensors use the compiled kernels. For that to work the
kernels call only ``tl`` builtins (``tl.full``, not ``tl.zeros``: the standard-library helpers are
compiled-mode ``@jit`` objects unless the env var was set at import) and this module's own ``@jit``
helpers, which the interpreted copies get as plain functions (``_compiled``; they resolve each other in
the same substituted scope, so helpers may call helpers). ``compile_for`` compiles a kernel for a named GPU architecture without a GPU (tests use it to
check the compiled path type-checks and lowers to PTX/cubin).
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from yolos_bf16accum.formats import MASK32, check_rounding, parse_format
from yolos_bf16accum.spec import AccumSpec, as_spec

MODES = {"rne": 0, "rtz": 1, "sr": 2}
# how the kernel rounds the running sum: 0 = not at all (fp32), 1 = bf16 RNE formula, 2 = _round_bits
ROUND_NONE, ROUND_BF16, ROUND_GENERIC = 0, 1, 2


@triton.jit
def _rne_bf16_bits(u):
    """fp32 bit patterns (uint32) -> the bit patterns of the nearest bf16 value, as fp32 (low 16 bits 0).

    Round to nearest, ties to even: add 0x7FFF plus the lowest kept bit, clear the low 16 bits. NaN is
    kept as the quiet NaN 0x7FC00000 (what torch's bf16 conversion gives): the bare formula turns NVIDIA's
    canonical NaN 0x7FFFFFFF into 0x80000000 = -0.0, so a NaN would vanish from a patched layer and the
    non-finite-loss guard could never fire. Inf and overflow to inf follow from the formula.
    """
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return tl.where(nan, 0x7FC00000, r)


@triton.jit
def _mix32(x):
    """``formats.mix32`` (Wellons' lowbias32) on int64 values, every step masked to 32 bits the same way."""
    x = x & 0xFFFFFFFF
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x = x ^ (x >> 16)
    return x


@triton.jit
def _round_bits(u, rb, MAN: tl.constexpr, EMIN_B: tl.constexpr, MAX_BITS: tl.constexpr, MODE: tl.constexpr,
                FN: tl.constexpr):
    """``formats.round_bits`` op for op: int64 fp32 patterns (unsigned values) -> int64 result patterns."""
    sign = u & 0x80000000
    a = u & 0x7FFFFFFF
    e32 = a >> 23
    ex = tl.maximum(e32, 1)
    sig = (a & 0x7FFFFF) | tl.where(e32 > 0, 0x800000, 0).to(tl.int64)
    d = (23 - MAN) + tl.maximum(EMIN_B - ex, 0)
    dk = tl.minimum(d, 24)
    kept = sig >> dk
    rem = sig & ((tl.full(dk.shape, 1, tl.int64) << dk) - 1)
    if MODE == 0:
        half = tl.full(d.shape, 1, tl.int64) << (tl.minimum(d, 25) - 1)
        up = (rem > half) | ((rem == half) & ((kept & 1) == 1))
    elif MODE == 1:
        up = rem < 0  # all false
    else:
        t = tl.minimum(tl.maximum(d - 32, 0), 24)
        thr = tl.where(d <= 32, rem << tl.maximum(32 - d, 0),
                       (rem + (tl.full(t.shape, 1, tl.int64) << t) - 1) >> t)
        up = (rb & 0xFFFFFFFF) < thr
    kept = kept + up.to(tl.int64)
    normal = ((ex - 1) << 23) + (kept << dk)
    tiny = tl.where(up, (ex - 23 + d) << 23, 0).to(tl.int64)
    res = tl.where(d >= 24, tiny, normal)
    over = (res > MAX_BITS) | (a == 0x7F800000)
    if FN or MODE == 1:
        res = tl.where(over, MAX_BITS, res).to(tl.int64)
    else:
        res = tl.where(over, 0x7F800000, res).to(tl.int64)
    if MODE == 1 and not FN:
        res = tl.where(a == 0x7F800000, 0x7F800000, res).to(tl.int64)
    return tl.where(a > 0x7F800000, 0x7FC00000, res | sign).to(tl.int64)


@triton.jit
def _round_sum(t, idx, step, SEED, ROUND: tl.constexpr, MAN: tl.constexpr, EMIN_B: tl.constexpr,
               MAX_BITS: tl.constexpr, MODE: tl.constexpr, FN: tl.constexpr):
    """The running-sum update's rounding of the fp32 tile ``t = s + c`` (chunk number ``step``)."""
    if ROUND == 1:
        return _rne_bf16_bits(t.to(tl.uint32, bitcast=True)).to(tl.float32, bitcast=True)
    elif ROUND == 2:
        rb = idx
        if MODE == 2:
            # the step as an int64 tile (a Python int in the interpreter, a scalar when compiled)
            rb = _mix32(idx ^ _mix32(SEED ^ _mix32(idx * 0 + step)))
        r = _round_bits(t.to(tl.uint32, bitcast=True).to(tl.int64), rb, MAN, EMIN_B, MAX_BITS, MODE, FN)
        return r.to(tl.uint32).to(tl.float32, bitcast=True)
    else:
        return t


def _acc_bmm_kernel(a_ptr, b_ptr, s0_ptr, c_ptr, M, N, K, SEED,
                    stride_ab, stride_ak, stride_am,
                    stride_bb, stride_bk, stride_bn,
                    stride_cb, stride_cm, stride_cn,
                    CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_INIT: tl.constexpr,
                    ROUND: tl.constexpr, MAN: tl.constexpr, EMIN_B: tl.constexpr, MAX_BITS: tl.constexpr,
                    MODE: tl.constexpr, FN: tl.constexpr):
    """C[b] = A[b] @ B[b], exact: A given k-major ([B, K, M]) so each k loads one contiguous row.

    A and B are fp32 holding operand-format values; C is fp32 holding accumulator-format values.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_b = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_row = a_ptr + pid_b * stride_ab + offs_m * stride_am
    b_row = b_ptr + pid_b * stride_bb + offs_n * stride_bn
    s = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    if HAS_INIT:
        s = s + tl.load(s0_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    # flat output index, for the stochastic-rounding hash (same as the emulation's)
    idx = ((pid_b * M + offs_m[:, None]).to(tl.int64) * N + offs_n[None, :]) & 0xFFFFFFFF
    for k0 in range(0, K, CHUNK):
        c = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
        for kk in range(CHUNK):
            k = k0 + kk  # K is a multiple of CHUNK: the wrapper zero-pads a short last chunk
            a = tl.load(a_row + k * stride_ak, mask=mask_m, other=0.0)
            b = tl.load(b_row + k * stride_bk, mask=mask_n, other=0.0)
            c += a[:, None] * b[None, :]
        s = _round_sum(s + c, idx, k0 // CHUNK, SEED, ROUND, MAN, EMIN_B, MAX_BITS, MODE, FN)
    c_ptrs = c_ptr + pid_b * stride_cb + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, s, mask=mask_m[:, None] & mask_n[None, :])


def _acc_dot_kernel(a_ptr, b_ptr, s0_ptr, c_ptr, M, N, K, SEED,
                    stride_ab, stride_am, stride_ak,
                    stride_bb, stride_bk, stride_bn,
                    stride_cb, stride_cm, stride_cn,
                    CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_INIT: tl.constexpr,
                    ROUND: tl.constexpr, MAN: tl.constexpr, EMIN_B: tl.constexpr, MAX_BITS: tl.constexpr,
                    MODE: tl.constexpr, FN: tl.constexpr, DOT_IN: tl.constexpr):
    """The tensor-core variant: each chunk sum is one ``tl.dot`` (fp32 accumulate), then the same rounding.

    ``DOT_IN``: the MMA's operand type, one that holds the operand format exactly: 1 = bf16 (bf16 and
    8-exponent-bit formats), 2 = fp16 (fp16, e5m2, e4m3fn); 0 = fp32 with ``input_precision="ieee"``,
    the interpreter's (its bf16/fp16 dot is wrong).
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_b = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, CHUNK)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_tile = a_ptr + pid_b * stride_ab + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_tile = b_ptr + pid_b * stride_bb + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    s = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    if HAS_INIT:
        s = s + tl.load(s0_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    idx = ((pid_b * M + offs_m[:, None]).to(tl.int64) * N + offs_n[None, :]) & 0xFFFFFFFF
    for k0 in range(0, K, CHUNK):
        a = tl.load(a_tile + k0 * stride_ak, mask=mask_m[:, None], other=0.0)
        b = tl.load(b_tile + k0 * stride_bk, mask=mask_n[None, :], other=0.0)
        if DOT_IN == 1:
            c = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), out_dtype=tl.float32)
        elif DOT_IN == 2:
            c = tl.dot(a.to(tl.float16), b.to(tl.float16), out_dtype=tl.float32)
        else:
            c = tl.dot(a, b, input_precision="ieee", out_dtype=tl.float32)
        s = _round_sum(s + c, idx, k0 // CHUNK, SEED, ROUND, MAN, EMIN_B, MAX_BITS, MODE, FN)
    c_ptrs = c_ptr + pid_b * stride_cb + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, s, mask=mask_m[:, None] & mask_n[None, :])


def _round_kernel(x_ptr, r_ptr, y_ptr, n, BLOCK: tl.constexpr, ROUND: tl.constexpr, MAN: tl.constexpr,
                  EMIN_B: tl.constexpr, MAX_BITS: tl.constexpr, MODE: tl.constexpr, FN: tl.constexpr):
    """The kernels' rounding over an array of fp32 patterns (int64 storage) with given random bits."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    u = tl.load(x_ptr + offs, mask=m, other=0)
    if ROUND == 1:
        y = _rne_bf16_bits(u.to(tl.uint32)).to(tl.int64)
    else:
        y = _round_bits(u, tl.load(r_ptr + offs, mask=m, other=0), MAN, EMIN_B, MAX_BITS, MODE, FN)
    tl.store(y_ptr + offs, y, mask=m)


_HELPERS = ("_rne_bf16_bits", "_mix32", "_round_bits", "_round_sum")
KERNELS = {"exact": _acc_bmm_kernel, "dot": _acc_dot_kernel, "round": _round_kernel}


@functools.cache
def _compiled(interpret: bool, name: str = "exact"):
    kernel = KERNELS[name]
    if interpret:
        import types

        from triton.runtime.interpreter import InterpretedFunction

        # The interpreter runs the kernel as Python: its @jit helpers must be plain functions there
        # (a JITFunction refuses calls outside a compiled kernel), so the interpreted copy of the kernel
        # and of every helper resolves helper names in one scope holding plain-function copies (helpers
        # may call each other); the compiled kernel keeps the JITFunctions.
        scope = dict(kernel.__globals__)
        for h in _HELPERS:
            fn = globals()[h].fn
            scope[h] = types.FunctionType(fn.__code__, scope, h, fn.__defaults__)
        return InterpretedFunction(types.FunctionType(kernel.__code__, scope, kernel.__name__))
    return triton.jit(kernel)


def round_params(spec: AccumSpec) -> dict:
    """The kernels' rounding constexprs for ``spec``'s accumulator format and mode."""
    fmt = spec.acc_format
    if fmt.is_fp32:
        rnd = ROUND_NONE
    elif fmt.name == "bf16" and spec.rounding == "rne":
        rnd = ROUND_BF16
    else:
        rnd = ROUND_GENERIC
    return dict(ROUND=rnd, MAN=fmt.man_bits, EMIN_B=fmt.emin + 127, MAX_BITS=fmt.max_bits,
                MODE=MODES[spec.rounding], FN=fmt.fn)


def round_bits_kernel(bits: torch.Tensor, fmt="bf16", mode: str = "rne", rbits: torch.Tensor | None = None, *,
                      interpret: bool | None = None) -> torch.Tensor:
    """The kernels' rounding applied to fp32 bit patterns (int64 tensor of uint32 values) -> int64 patterns.

    For tests of the exact rounding against :func:`yolos_bf16accum.formats.round_bits` (NaN payloads, ties,
    overflow, every format and mode)."""
    check_rounding(mode)
    spec = AccumSpec(acc=parse_format(fmt).name, rounding=mode)
    x = (bits.to(torch.int64) & MASK32).contiguous()
    r = (torch.zeros_like(x) if rbits is None else rbits.to(torch.int64) & MASK32).contiguous()
    if interpret is None:
        interpret = x.device.type != "cuda"
    y = torch.empty_like(x)
    block = 1024
    params = round_params(spec)
    if params["ROUND"] == ROUND_NONE:
        return x.clone()
    _compiled(bool(interpret), "round")[(triton.cdiv(x.numel(), block),)](x, r, y, x.numel(), BLOCK=block, **params)
    return y


def round_bits_bf16(bits: torch.Tensor, *, interpret: bool | None = None) -> torch.Tensor:
    """The exact kernel's bf16 RNE (the three-op formula) on fp32 bit patterns -> int64 result patterns."""
    return round_bits_kernel(bits, "bf16", "rne", interpret=interpret)


def dot_input_type(spec: AccumSpec) -> int:
    """The tensor-core operand type that represents ``spec``'s operand format exactly (1 bf16, 2 fp16)."""
    op = spec.operand_format
    if op.name == "bf16" or (op.exp_bits > 5 and op.man_bits <= 7):
        return 1
    if op.exp_bits <= 5 and op.man_bits <= 10:
        return 2
    raise ValueError(f"the tensor-core variant has no MMA type that holds operand format {op.name} exactly")


def _pow2_at_most(n: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(max(n, 1))))


def triton_accum_matmul(a: torch.Tensor, b: torch.Tensor, spec: AccumSpec | int = 1, *,
                        bias_init: torch.Tensor | None = None, interpret: bool | None = None,
                        variant: str = "exact") -> torch.Tensor:
    """``a @ b`` on ``spec``'s datapath on a Triton kernel (same contract as ``emulation.accum_matmul``).

    Args:
        a: ``[..., M, K]`` (rounded to the operand format).
        b: ``[..., K, N]``; batch dims broadcast with ``a``.
        spec: an :class:`AccumSpec` or an int chunk.
        bias_init: ``[N]`` running-sum start (``spec.bias == "init"``).
        interpret: run the Triton CPU interpreter (default: when the tensors are not on CUDA). Slow:
            seconds for a 64 x 64 x 64 product; meant for tests.
        variant: ``exact`` (CUDA-core FMAs in k order, bit-identical to the emulation) or ``dot``
            (tensor-core ``tl.dot`` per chunk; chunk must be a multiple of 16; within a tolerance).

    Returns:
        ``[..., M, N]``: bf16 for a bf16 accumulator, else fp32 holding the format's values.
    """
    from yolos_bf16accum.formats import round_to_format

    spec = as_spec(spec)
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"inner dimensions differ: a {tuple(a.shape)} @ b {tuple(b.shape)}")
    if variant not in ("exact", "dot"):
        raise ValueError(f"variant must be exact or dot, got {variant!r}")
    if variant == "dot" and spec.chunk % 16:
        raise ValueError(f"the tensor-core variant needs a chunk that is a multiple of 16 (tl.dot's K), got {spec.chunk}")
    if bias_init is not None and tuple(bias_init.shape) != (b.shape[-1],):
        raise ValueError(f"bias_init must have shape ({b.shape[-1]},), got {tuple(bias_init.shape)}")
    if variant == "dot":
        dot_input_type(spec)
    if interpret is None:
        interpret = a.device.type != "cuda"
    if not interpret and a.device.type != "cuda":
        raise RuntimeError(f"the compiled Triton kernel needs CUDA tensors, got {a.device}; "
                           f"use interpret=True or the torch emulation")
    out_dtype = torch.bfloat16 if spec.acc_format.name == "bf16" else torch.float32
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    nb = math.prod(batch)
    opf = spec.operand_format
    with torch.autocast(device_type=a.device.type, enabled=False):
        a32 = round_to_format(a, opf).expand(*batch, M, K).reshape(nb, M, K)
        b32 = round_to_format(b, opf).expand(*batch, K, N).reshape(nb, K, N).contiguous()
        s0 = (torch.zeros(1, device=a.device) if bias_init is None
              else round_to_format(bias_init, spec.acc_format).contiguous())
    pad = (-K) % spec.chunk
    if variant == "exact":
        # k-major A: each k step reads one contiguous row of A and of B (coalesced on GPU)
        at = a32.transpose(1, 2).contiguous()
        if pad:
            # Zero products leave every partial sum unchanged (c + 0 == c), so padding is invisible.
            at = torch.nn.functional.pad(at, (0, 0, 0, pad))
        a_strides = (at.stride(0), at.stride(1), at.stride(2))
    else:
        at = torch.nn.functional.pad(a32, (0, pad)).contiguous() if pad else a32.contiguous()
        a_strides = (at.stride(0), at.stride(1), at.stride(2))
    bt = torch.nn.functional.pad(b32, (0, 0, 0, pad)) if pad else b32
    out = torch.empty(nb, M, N, dtype=torch.float32, device=a.device)
    if M == 0 or N == 0 or nb == 0:
        return out.to(out_dtype).reshape(*batch, M, N)
    if K == 0:
        return s0.expand(nb, M, N).to(out_dtype).reshape(*batch, M, N).clone() if bias_init is not None \
            else out.zero_().to(out_dtype).reshape(*batch, M, N)
    # The interpreter pays per program and per loop step in Python, so it gets big tiles.
    cap = 128 if interpret else 64
    block_m, block_n = _pow2_at_most(M, cap), _pow2_at_most(N, cap)
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n), nb)
    extra = {} if variant == "exact" else {"DOT_IN": 0 if interpret else dot_input_type(spec)}
    _compiled(bool(interpret), variant)[grid](
        at, bt, s0, out, M, N, K + pad, spec.seed & MASK32,
        *a_strides, bt.stride(0), bt.stride(1), bt.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        CHUNK=spec.chunk, BLOCK_M=block_m, BLOCK_N=block_n, HAS_INIT=bias_init is not None,
        **round_params(spec), **extra)
    return _narrow(out, out_dtype).reshape(*batch, M, N)


def _narrow(out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp32 holding bf16 values -> bf16 by taking the high 16 bits (exact; keeps the kernel's quiet NaN
    0x7FC0, where torch's conversion gives its own NaN bits, 0xFFFF on this CPU)."""
    if dtype != torch.bfloat16:
        return out
    return (out.view(torch.int32) >> 16).to(torch.int16).view(torch.bfloat16)


def triton_bf16acc_matmul(a: torch.Tensor, b: torch.Tensor, accum_chunk: int | AccumSpec = 1, *,
                          interpret: bool | None = None) -> torch.Tensor:
    """``a @ b`` with bf16 accumulation on the exact kernel (same contract as ``bf16acc_matmul``)."""
    return triton_accum_matmul(a, b, accum_chunk, interpret=interpret)


def triton_dot_matmul(a: torch.Tensor, b: torch.Tensor, spec: AccumSpec | int = 32, *,
                      interpret: bool | None = None) -> torch.Tensor:
    """The tensor-core variant (``tl.dot`` per chunk); equal to the emulation within a tolerance only."""
    return triton_accum_matmul(a, b, spec, interpret=interpret, variant="dot")


def compile_for(variant: str, arch: int, spec: AccumSpec | int = 32, *, block: int = 64) -> dict[str, str]:
    """Compiles a kernel for CUDA compute capability ``arch`` (e.g. 90, 120) without a GPU.

    Returns the compiler's artifacts (``ttir``, ``ttgir``, ``llir``, ``ptx``, ``cubin``): what a GPU run
    would load. Used by tests to check that the compiled path type-checks and lowers on this Triton.
    """
    from triton.backends.compiler import GPUTarget

    spec = as_spec(spec)
    kernel = triton.jit(KERNELS[variant])
    ptrs = {"a_ptr": "*fp32", "b_ptr": "*fp32", "s0_ptr": "*fp32", "c_ptr": "*fp32"}
    ints = {n: "i32" for n in ("M", "N", "K", "stride_ab", "stride_ak", "stride_am", "stride_bb", "stride_bk",
                               "stride_bn", "stride_cb", "stride_cm", "stride_cn")}
    const = dict(CHUNK=spec.chunk, BLOCK_M=block, BLOCK_N=block, HAS_INIT=spec.bias == "init", **round_params(spec))
    if variant == "dot":
        const["DOT_IN"] = dot_input_type(spec)
    sig = {}
    for name in kernel.arg_names:
        sig[name] = ptrs.get(name) or ints.get(name) or ("i64" if name == "SEED" else "constexpr")
    src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=const)
    return dict(triton.compile(src, target=GPUTarget("cuda", arch, 32)).asm)
