"""Triton kernel for bf16-accumulating batched matmuls, bit-identical to :mod:`.emulation`.

Why the kernel looks the way it does (the notes, section 5, have the measurements):

* NVIDIA tensor cores have no bf16 accumulator and Triton rejects ``tl.dot(..., out_dtype=tl.bfloat16)``,
  so the running sum is an fp32 register tile that is rounded to bf16 *values* by integer RNE
  (bitcast to uint32, add ``0x7FFF + lsb``, clear the low 16 bits; NaN kept as 0x7FC00000). The tile only
  holds bf16-representable numbers, and the store takes its high 16 bits.
* bf16 never goes through a Triton float conversion: operands arrive as int16 bit patterns and are
  widened by a 16-bit shift, the result is narrowed the same way. Triton 3.9's interpreter converts bf16
  subnormals wrongly in ``.to(tl.float32)`` / ``.to(tl.bfloat16)``; shifts are exact everywhere.
* Every arithmetic op is fp32 on widened bf16 operands. That is what makes the CPU interpreter
  (``TRITON_INTERPRET``) path representative: the interpreter computes garbage for bf16 ``+``/``*``/
  ``tl.dot``, truncates fp32->bf16 casts and mis-converts bf16 subnormals. No op here depends on any of
  those (bf16 only ever moves as int16 bit patterns, see below).
* Products are accumulated one k at a time with CUDA-core FMAs (``c += a_k * b_k``) rather than by
  ``tl.dot``: the product of two bf16 numbers is exact in fp32, so an FMA equals multiply-then-add, and
  the k order is the one the emulation uses. A tensor-core ``tl.dot`` per chunk would be much faster but
  sums inside the MMA in an unspecified order, i.e. not bit-identical. This is the cost of exactness:
  no tensor cores (``bench.py`` reports the ratio against cuBLAS).

The interpreter function is built directly (``InterpretedFunction``), so CPU tensors use the interpreter
without anyone setting ``TRITON_INTERPRET`` in the environment; CUDA tensors use the compiled kernel. For
that to work the kernel calls only ``tl`` builtins (``tl.full``, not ``tl.zeros``: the standard-library
helpers are compiled-mode ``@jit`` objects unless the env var was set at import) and this module's own two
``@jit`` helpers, which the interpreted copy gets as plain functions (``_compiled``; helpers must not
call each other).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


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
def _widen_bf16(h):
    """bf16 bit patterns (int16) -> fp32 values by a 16-bit shift. Exact for every bf16 value, subnormals
    and specials included; the interpreter's ``.to(tl.float32)`` mis-converts bf16 subnormals."""
    return (h.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)


def _bf16acc_bmm_kernel(a_ptr, b_ptr, c_ptr, M, N, K,
                        stride_ab, stride_ak, stride_am,
                        stride_bb, stride_bk, stride_bn,
                        stride_cb, stride_cm, stride_cn,
                        CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """C[b] = A[b] @ B[b] with A given k-major ([B, K, M]) so each k loads one contiguous row.

    A, B and C are bf16 tensors passed as their int16 bit patterns: widening and narrowing are bit
    shifts (exact on every backend, see ``_widen_bf16``), all arithmetic is fp32.
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
    for k0 in range(0, K, CHUNK):
        c = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
        for kk in range(CHUNK):
            k = k0 + kk  # K is a multiple of CHUNK: the wrapper zero-pads a short last chunk
            a = _widen_bf16(tl.load(a_row + k * stride_ak, mask=mask_m, other=0))
            b = _widen_bf16(tl.load(b_row + k * stride_bk, mask=mask_n, other=0))
            c += a[:, None] * b[None, :]
        # s = RNE_bf16(s + c), on the fp32 bit pattern (torch's bits; a NaN is always the quiet 0x7FC00000,
        # where torch's own NaN bits vary by code path)
        s = _rne_bf16_bits((s + c).to(tl.uint32, bitcast=True)).to(tl.float32, bitcast=True)
    c_ptrs = c_ptr + pid_b * stride_cb + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    # s holds bf16 values: the high 16 bits are the bf16 pattern (narrowing by a shift, exact)
    out = (s.to(tl.uint32, bitcast=True) >> 16).to(tl.uint16).to(tl.int16, bitcast=True)
    tl.store(c_ptrs, out, mask=mask_m[:, None] & mask_n[None, :])


def _rne_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    """``_rne_bf16_bits`` over a uint32 array (int32 storage): the kernel's rounding on chosen bit patterns."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    u = tl.load(x_ptr + offs, mask=m, other=0).to(tl.uint32, bitcast=True)
    tl.store(y_ptr + offs, _rne_bf16_bits(u).to(tl.int32, bitcast=True), mask=m)


_HELPERS = ("_rne_bf16_bits", "_widen_bf16")


@functools.cache
def _compiled(interpret: bool, kernel=None):
    kernel = kernel or _bf16acc_bmm_kernel
    if interpret:
        import types

        from triton.runtime.interpreter import InterpretedFunction

        # The interpreter runs the kernel as Python: its @jit helpers must be plain functions there
        # (a JITFunction refuses calls outside a compiled kernel), so the interpreted copy of the kernel
        # sees each helper's underlying function; the compiled kernel keeps the JITFunctions.
        scope = {**kernel.__globals__, **{h: globals()[h].fn for h in _HELPERS}}
        return InterpretedFunction(types.FunctionType(kernel.__code__, scope, kernel.__name__))
    return triton.jit(kernel)


def round_bits_bf16(bits: torch.Tensor, *, interpret: bool | None = None) -> torch.Tensor:
    """The kernel's bf16 rounding applied to fp32 bit patterns (int64/int32 tensor of uint32 values) ->
    int64 tensor of result patterns. For tests of the exact rounding (NaN payloads, ties, overflow)."""
    x = bits.to(torch.int64).to(torch.uint32).view(torch.int32).contiguous()
    if interpret is None:
        interpret = x.device.type != "cuda"
    y = torch.empty_like(x)
    block = 1024
    _compiled(bool(interpret), _rne_kernel)[(triton.cdiv(x.numel(), block),)](x, y, x.numel(), BLOCK=block)
    return y.view(torch.uint32).to(torch.int64)


def _pow2_at_most(n: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(max(n, 1))))


def triton_bf16acc_matmul(a: torch.Tensor, b: torch.Tensor, accum_chunk: int = 1, *,
                          interpret: bool | None = None) -> torch.Tensor:
    """``a @ b`` with bf16 accumulation on the Triton kernel (same contract as ``bf16acc_matmul``).

    Args:
        a: ``[..., M, K]`` (rounded to bf16).
        b: ``[..., K, N]``; batch dims broadcast with ``a``.
        accum_chunk: products summed in fp32 before each bf16 rounding of the running sum.
        interpret: run the Triton CPU interpreter (default: when the tensors are not on CUDA). Slow:
            seconds for a 64 x 64 x 64 product; meant for tests.

    Returns:
        ``[..., M, N]`` bf16, bit-identical to :func:`yolos_bf16accum.emulation.bf16acc_matmul`.
    """
    from yolos_bf16accum.emulation import check_accum_chunk

    check_accum_chunk(accum_chunk)
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"inner dimensions differ: a {tuple(a.shape)} @ b {tuple(b.shape)}")
    if interpret is None:
        interpret = a.device.type != "cuda"
    if not interpret and a.device.type != "cuda":
        raise RuntimeError(f"the compiled Triton kernel needs CUDA tensors, got {a.device}; "
                           f"use interpret=True or the torch emulation")
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    # k-major A and row-major B: each k step reads one contiguous row of both (coalesced on GPU).
    # The two copies cost one pass over the operands, nothing next to the K-step loop.
    at = a.to(torch.bfloat16).expand(*batch, M, K).reshape(-1, M, K).transpose(1, 2).contiguous()
    bt = b.to(torch.bfloat16).expand(*batch, K, N).reshape(-1, K, N).contiguous()
    at, bt = at.view(torch.int16), bt.view(torch.int16)   # bit patterns: the kernel widens by shifts
    pad = (-K) % accum_chunk
    if pad:
        # Zero products leave every partial sum unchanged (c + 0 == c), so padding is invisible.
        at = torch.nn.functional.pad(at, (0, 0, 0, pad))
        bt = torch.nn.functional.pad(bt, (0, 0, 0, pad))
    nb = at.shape[0]
    out = torch.empty(nb, M, N, dtype=torch.int16, device=a.device)
    if M == 0 or N == 0 or nb == 0:
        return out.view(torch.bfloat16).reshape(*batch, M, N)
    if K == 0:
        return out.zero_().view(torch.bfloat16).reshape(*batch, M, N)
    # The interpreter pays per program and per loop step in Python, so it gets big tiles.
    cap = 128 if interpret else 64
    block_m, block_n = _pow2_at_most(M, cap), _pow2_at_most(N, cap)
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n), nb)
    _compiled(bool(interpret))[grid](
        at, bt, out, M, N, K + pad,
        at.stride(0), at.stride(1), at.stride(2),
        bt.stride(0), bt.stride(1), bt.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        CHUNK=accum_chunk, BLOCK_M=block_m, BLOCK_N=block_n)
    return out.view(torch.bfloat16).reshape(*batch, M, N)
