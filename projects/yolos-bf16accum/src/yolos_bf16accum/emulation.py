"""Exact PyTorch emulation of matmuls that accumulate in bf16 (runs on any device).

What "bf16 accumulation" means here (the reference every kernel in this package is held to):

* Operands are rounded to bf16 (round to nearest, ties to even: RNE) and widened back to fp32. A product
  of two bf16 numbers (8 significant bits each) is exact in fp32, so products never round, **as long as
  it lies in fp32's normal range**: 2^-126 <= |a_k b_k| < 2^128, or exactly 0. Outside it (bf16 shares
  fp32's exponent range, so two extreme operands can multiply past it) the product overflows or becomes
  an fp32 subnormal, and the bits then depend on whether the backend fuses multiply and add (CPU
  ``addcmul_`` on AVX2/AVX-512 does, ``ATEN_CPU_CAPABILITY=default`` does not; the CUDA kernel contracts to
  FMA). Bit identity between emulation and kernel is claimed, and tested, inside that range only; a
  layer's activations and weights sit about 2^±100 inside it.
* The reduction over K runs in **k order**. A chunk partial sum ``c`` starts at 0 and takes the products
  of ``accum_chunk`` consecutive k in fp32 (``c = c + a_k * b_k``); at the end of every chunk the running
  sum is updated as ``s = RNE_bf16(s + c)`` (the fp32 add rounds first, then the result is rounded to
  bf16). ``accum_chunk=1`` is per-MAC accumulation (a bf16 accumulator updated by every product);
  ``accum_chunk=16/32/64`` is a K-block kernel that spills its fp32 block sum into a bf16 running sum
  (Wang et al. 2018 "chunk-based accumulation"). The last chunk may be short when K is not a multiple.
* The result is bf16 (returned as a bf16 tensor).

Fixing the summation order inside a chunk is what makes the Triton kernel bit-identical to this file on
any backend: fp32 addition is not associative, and a blocked BLAS (or a tensor-core MMA) sums a chunk in
its own order. The price is speed: this emulation costs K outer-product updates of an M x N tile
(~0.1-1 s per YOLOS-tiny linear on a CPU core, see ``bench.py``), whatever the chunk size.
"""

from __future__ import annotations

import torch


def round_to_bf16(x: torch.Tensor) -> torch.Tensor:
    """RNE-rounds an fp32 tensor to the nearest bf16 value, returned as fp32 (exactly representable)."""
    return x.to(torch.bfloat16).to(torch.float32)


def check_accum_chunk(accum_chunk: int) -> int:
    """Validates ``accum_chunk`` (a positive int) and returns it."""
    if isinstance(accum_chunk, bool) or not isinstance(accum_chunk, int) or accum_chunk < 1:
        raise ValueError(f"accum_chunk must be a positive integer (1 = per-MAC, 16/32/64 = K-block), "
                         f"got {accum_chunk!r}")
    return accum_chunk


def bf16acc_matmul(a: torch.Tensor, b: torch.Tensor, accum_chunk: int = 1) -> torch.Tensor:
    """``a @ b`` with bf16 operands and a bf16 running sum (see the module docstring).

    Args:
        a: ``[..., M, K]``, any float dtype (rounded to bf16 first).
        b: ``[..., K, N]``, broadcastable batch dims with ``a``.
        accum_chunk: products summed in fp32 before each bf16 rounding of the running sum.

    Returns:
        ``[..., M, N]`` bf16.
    """
    check_accum_chunk(accum_chunk)
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"inner dimensions differ: a {tuple(a.shape)} @ b {tuple(b.shape)}")
    # Autocast would turn the fp32 updates below into bf16 matmuls: switch it off for this region.
    with torch.autocast(device_type=a.device.type, enabled=False):
        # k-major contiguous copies: column k of a and row k of b are then contiguous vectors, which
        # makes each outer-product update a streaming pass (10-50x faster than strided views).
        at = round_to_bf16(a.float()).transpose(-1, -2).contiguous()
        b32 = round_to_bf16(b.float()).contiguous()
        K = at.shape[-2]
        shape = torch.broadcast_shapes(at.shape[:-2], b32.shape[:-2]) + (at.shape[-1], b32.shape[-1])
        s = at.new_zeros(shape)
        c = torch.empty_like(s)
        for k0 in range(0, K, accum_chunk):
            c.zero_()
            for k in range(k0, min(k0 + accum_chunk, K)):
                # outer product of column k and row k added in fp32; the product is exact, so a fused
                # multiply-add gives the same bits as a multiply then an add
                c.addcmul_(at[..., k, :, None], b32[..., k, None, :])
            s.add_(c)
            s = round_to_bf16(s)
    return s.to(torch.bfloat16)


def bf16acc_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   accum_chunk: int = 1) -> torch.Tensor:
    """``x @ weight.T (+ bias)`` with bf16 accumulation; the bias is added in one final bf16 rounding.

    Args:
        x: ``[..., K]``.
        weight: ``[N, K]`` (``nn.Linear`` layout).
        bias: ``[N]`` or ``None``.
        accum_chunk: see :func:`bf16acc_matmul`.

    Returns:
        ``[..., N]`` bf16.
    """
    y = bf16acc_matmul(x.reshape(-1, x.shape[-1]), weight.t(), accum_chunk)
    return add_bias_bf16(y, bias).reshape(*x.shape[:-1], weight.shape[0])


def add_bias_bf16(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``RNE_bf16(y + RNE_bf16(bias))`` in fp32; shared by every backend so they agree bit for bit."""
    if bias is None:
        return y
    with torch.autocast(device_type=y.device.type, enabled=False):
        return (y.float() + round_to_bf16(bias.float())).to(torch.bfloat16)


def reference_matmul_fp64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact-ish reference: bf16-rounded operands, float64 products and sum (for error studies)."""
    return round_to_bf16(a.float()).double() @ round_to_bf16(b.float()).double()
