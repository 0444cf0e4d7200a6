"""Triton kernel for bf16-accumulating batched matmuls, bit-identical to :mod:`.emulation`.

Why the kernel looks the way it does (the notes, section 5, have the measurements):

* NVIDIA tensor cores have no bf16 accumulator and Triton rejects ``tl.dot(..., out_dtype=tl.bfloat16)``,
  so the running sum is an fp32 register tile that is rounded to bf16 *values* by integer RNE
  (bitcast to uint32, add ``0x7FFF + lsb``, clear the low 16 bits). The tile stays fp32 and only holds
  bf16-representable numbers, so the final ``.to(tl.bfloat16)`` store is exact on any rounding mode.
* Every arithmetic op is fp32 on widened bf16 operands. That is what makes the CPU interpreter
  (``TRITON_INTERPRET``) path representative: the interpreter does bf16 loads/stores and bf16->fp32
  casts correctly but computes garbage for bf16 ``+``/``*``/``tl.dot`` and truncates fp32->bf16 casts.
  No op here depends on any of those.
* Products are accumulated one k at a time with CUDA-core FMAs (``c += a_k * b_k``) rather than by
  ``tl.dot``: the product of two bf16 numbers is exact in fp32, so an FMA equals multiply-then-add, and
  the k order is the one the emulation uses. A tensor-core ``tl.dot`` per chunk would be much faster but
  sums inside the MMA in an unspecified order, i.e. not bit-identical. This is the cost of exactness:
  no tensor cores (``bench.py`` reports the ratio against cuBLAS).

The interpreter function is built directly (``InterpretedFunction``), so CPU tensors use the interpreter
without anyone setting ``TRITON_INTERPRET`` in the environment; CUDA tensors use the compiled kernel. For
that to work the kernel calls only ``tl`` builtins (``tl.full``, not ``tl.zeros``): the standard-library
helpers are themselves ``@jit`` functions, compiled-mode objects unless the env var was set at import.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


def _bf16acc_bmm_kernel(a_ptr, b_ptr, c_ptr, M, N, K,
                        stride_ab, stride_ak, stride_am,
                        stride_bb, stride_bk, stride_bn,
                        stride_cb, stride_cm, stride_cn,
                        CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """C[b] = A[b] @ B[b] with A given k-major ([B, K, M]) so each k loads one contiguous row."""
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
            a = tl.load(a_row + k * stride_ak, mask=mask_m, other=0.0).to(tl.float32)
            b = tl.load(b_row + k * stride_bk, mask=mask_n, other=0.0).to(tl.float32)
            c += a[:, None] * b[None, :]
        # s = RNE_bf16(s + c), done on the fp32 bit pattern (NaN payloads aside, identical to torch)
        u = (s + c).to(tl.uint32, bitcast=True)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        s = u.to(tl.float32, bitcast=True)
    c_ptrs = c_ptr + pid_b * stride_cb + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, s.to(tl.bfloat16), mask=mask_m[:, None] & mask_n[None, :])


@functools.cache
def _compiled(interpret: bool):
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(_bf16acc_bmm_kernel)
    return triton.jit(_bf16acc_bmm_kernel)


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
    pad = (-K) % accum_chunk
    if pad:
        # Zero products leave every partial sum unchanged (c + 0 == c), so padding is invisible.
        at = torch.nn.functional.pad(at, (0, 0, 0, pad))
        bt = torch.nn.functional.pad(bt, (0, 0, 0, pad))
    nb = at.shape[0]
    out = torch.empty(nb, M, N, dtype=torch.bfloat16, device=a.device)
    if M == 0 or N == 0 or nb == 0:
        return out.reshape(*batch, M, N)
    if K == 0:
        return out.zero_().reshape(*batch, M, N)
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
    return out.reshape(*batch, M, N)
