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
its own order. The general datapath (:class:`yolos_bf16accum.spec.AccumSpec`) keeps this structure and parametrises it:
operand format, accumulator format (fp16, fp8, any ``e<E>m<M>``), rounding mode (RNE, toward zero,
stochastic), and where a bias enters (accumulator init or epilogue). The rounding is
:func:`yolos_bf16accum.formats.round_bits`, integer steps the Triton kernel repeats op for op.

Paths (all give the definition's bits; :func:`path_for` names the one a call takes):

* ``loop``: the definition itself, one outer-product update of the M x N tile per k.
* ``addcmul-bf16``: per-MAC bf16 RNE with the running sum held *as a bf16 tensor* and updated by
  ``addcmul_`` (torch forms ``s + a*b`` in fp32 and rounds once to bf16: the definition's two roundings,
  since the product is exact); ~1.5x faster than the loop.
* ``bmm``: chunk > 1: all chunk sums by one batched fp32 matmul, then the rounded reduction over chunks;
  used per shape only after :mod:`.fastpath`'s probe shows this BLAS sums a chunk in k order.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from yolos_bf16accum import fastpath
from yolos_bf16accum.formats import random_bits, round_to_format
from yolos_bf16accum.spec import AccumSpec, as_spec, check_accum_chunk

__all__ = ["AccumSpec", "add_bias_bf16", "accum_linear", "accum_matmul", "bf16acc_linear", "bf16acc_matmul",
           "check_accum_chunk", "path_for", "reference_matmul_fp64", "round_to_bf16"]

# How many calls took each path (for the benchmark's report; a counter, not configuration).
PATHS_USED: Counter = Counter()


def round_to_bf16(x: torch.Tensor) -> torch.Tensor:
    """RNE-rounds an fp32 tensor to the nearest bf16 value, returned as fp32 (exactly representable)."""
    return x.to(torch.bfloat16).to(torch.float32)


def path_for(spec: AccumSpec | int, batches: int, m: int, k: int, n: int, device: torch.device | str = "cpu",
             prefer: str = "auto") -> str:
    """The path a ``[batches, m, k] @ [batches, k, n]`` call with ``spec`` takes (``prefer="loop"``: the loop)."""
    spec = as_spec(spec)
    if prefer == "loop":
        return "loop"
    if prefer not in ("auto", "fast"):
        raise ValueError(f"prefer must be auto, fast or loop, got {prefer!r}")
    if spec.chunk == 1:
        return "addcmul-bf16" if spec.is_seed_default else "loop"
    return "bmm" if fastpath.bmm_is_k_order(batches, m, n, k, spec.chunk, torch.device(device)) else "loop"


def _round_acc(s: torch.Tensor, spec: AccumSpec, index: torch.Tensor | None, step: int) -> torch.Tensor:
    rb = random_bits(spec.seed, index, step) if spec.rounding == "sr" else None
    return round_to_format(s, spec.acc_format, spec.rounding, rb)


def accum_matmul(a: torch.Tensor, b: torch.Tensor, spec: AccumSpec | int = 1, *,
                 bias_init: torch.Tensor | None = None, prefer: str = "auto") -> torch.Tensor:
    """``a @ b`` on the datapath ``spec`` (see the module docstring and :class:`AccumSpec`).

    Args:
        a: ``[..., M, K]``, any float dtype (rounded to the operand format first).
        b: ``[..., K, N]``, broadcastable batch dims with ``a``.
        spec: an :class:`AccumSpec`, or an int chunk (the seed's bf16 datapath with that chunk).
        bias_init: ``[N]``: the running sum starts at this (rounded to the accumulator format) instead
            of 0 (``spec.bias == "init"``; the caller passes it).
        prefer: ``auto`` (fastest exact path) or ``loop`` (the definition, for tests).

    Returns:
        ``[..., M, N]``: bf16 for a bf16 accumulator, else fp32 holding the accumulator format's values.
    """
    spec = as_spec(spec)
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"inner dimensions differ: a {tuple(a.shape)} @ b {tuple(b.shape)}")
    if bias_init is not None and tuple(bias_init.shape) != (b.shape[-1],):
        raise ValueError(f"bias_init must have shape ({b.shape[-1]},), got {tuple(bias_init.shape)}")
    out_dtype = torch.bfloat16 if spec.acc_format.name == "bf16" else torch.float32
    # Autocast would turn the fp32 updates below into bf16 matmuls: switch it off for this region. Not
    # differentiable (the STE layers in ste.py give the gradient): no_grad keeps callers' graphs out of
    # the reused scratch and lets the out= GEMMs run on inputs that require grad.
    with torch.autocast(device_type=a.device.type, enabled=False), torch.no_grad():
        opf = spec.operand_format
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
        nb = math.prod(batch)
        if opf.name == "bf16" and a.dtype in (torch.float32, torch.bfloat16):
            # the big operand (attention probabilities are S x S) into reused scratch: one bf16 rounding,
            # one widening copy, no fresh fp32 pages
            a32 = fastpath.scratch("a", (nb, M, K), a.device)
            a32.copy_(a.to(torch.bfloat16).expand(*batch, M, K).reshape(nb, M, K))
        else:
            a32 = round_to_format(a, opf).expand(*batch, M, K).reshape(nb, M, K)
        b32 = round_to_format(b, opf).expand(*batch, K, N).reshape(nb, K, N).contiguous()
        index = (torch.arange(nb * M * N, dtype=torch.int64, device=a.device).view(nb, M, N)
                 if spec.rounding == "sr" else None)
        path = path_for(spec, nb, M, K, N, a.device, prefer)
        PATHS_USED[path] += 1
        s0 = None if bias_init is None else round_to_format(bias_init, spec.acc_format)
        if path == "addcmul-bf16":
            # The running sum is a bf16 tensor: torch's bf16 addcmul forms s + a*b in fp32 and rounds once
            # to bf16, the definition's two roundings in one op. All-bf16 operands: the vectorised kernel
            # (mixed fp32 operands take a slow path).
            s = a32.new_zeros(nb, M, N, dtype=torch.bfloat16)
            if s0 is not None:
                s += s0.to(torch.bfloat16)
            at = a32.transpose(-1, -2).to(torch.bfloat16).contiguous()
            bb = b32.to(torch.bfloat16)
            for k in range(K):
                s.addcmul_(at[:, k, :, None], bb[:, k, None, :])
        elif path == "bmm" and K > 0:
            # c takes each chunk sum, then s + c in fp32 (into c), then the rounding. bf16 RNE rounds by a
            # copy into the bf16 running sum s16, mirrored in fp32 (s32) because a mixed-dtype add is ~2x
            # slower than a copy plus an fp32 add. c and s32 are reused scratch (fastpath.scratch): fresh
            # pages cost ~0.3 ms per MB here, as much as a chunk's GEMM.
            nchunks = -(-K // spec.chunk)
            c = fastpath.scratch("c", (nb, M, N), a.device)
            s16 = s32 = s = None
            for j, k0 in enumerate(fastpath.chunk_starts(K, spec.chunk)):
                fastpath.chunk_sum(a32, b32, k0, spec.chunk, out=c)
                if j > 0:
                    c.add_(s32 if spec.is_seed_default else s)
                elif s0 is not None:
                    c += s0
                if not spec.is_seed_default:
                    s = _round_acc(c, spec, index, j)
                    if s is c:            # fp32 "rounding" is the identity: s must not alias the buffer
                        s = c.clone()
                    continue
                if s16 is None:
                    s16 = c.to(torch.bfloat16)
                    s32 = fastpath.scratch("s32", (nb, M, N), a.device)
                else:
                    s16.copy_(c)
                if j < nchunks - 1:       # the last sum needs no fp32 mirror
                    s32.copy_(s16)
            s = s if s16 is None else s16
        else:
            # k-major contiguous copies: column k of a and row k of b are then contiguous vectors, which
            # makes each outer-product update a streaming pass (10-50x faster than strided views).
            s = a32.new_zeros(nb, M, N) if s0 is None else s0.expand(nb, M, N).clone()
            at = a32.transpose(-1, -2).contiguous()
            c = torch.empty_like(s)
            for j, k0 in enumerate(range(0, K, spec.chunk)):
                c.zero_()
                for k in range(k0, min(k0 + spec.chunk, K)):
                    # outer product of column k and row k added in fp32; the product is exact, so a fused
                    # multiply-add gives the same bits as a multiply then an add
                    c.addcmul_(at[:, k, :, None], b32[:, k, None, :])
                s = _round_acc(s + c, spec, index, j)
    return s.reshape(*batch, M, N).to(out_dtype)


def bf16acc_matmul(a: torch.Tensor, b: torch.Tensor, accum_chunk: int | AccumSpec = 1) -> torch.Tensor:
    """``a @ b`` with bf16 operands and a bf16 running sum (the seed's datapath; any spec is accepted).

    Args:
        a: ``[..., M, K]``, any float dtype (rounded to bf16 first).
        b: ``[..., K, N]``, broadcastable batch dims with ``a``.
        accum_chunk: products summed in fp32 before each bf16 rounding of the running sum (or a spec).

    Returns:
        ``[..., M, N]`` bf16.
    """
    return accum_matmul(a, b, accum_chunk)


def accum_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: AccumSpec | int,
                 matmul=accum_matmul) -> torch.Tensor:
    """``x @ weight.T + bias`` on ``spec``'s datapath; ``matmul`` is the backend (emulation or kernel)."""
    spec = as_spec(spec)
    x2 = x.reshape(-1, x.shape[-1])
    if bias is not None and spec.bias == "init":
        y = matmul(x2, weight.t(), spec, bias_init=bias)
    else:
        y = add_bias(matmul(x2, weight.t(), spec), bias, spec)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def bf16acc_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   accum_chunk: int | AccumSpec = 1) -> torch.Tensor:
    """``x @ weight.T (+ bias)`` with bf16 accumulation; the bias is added in one final bf16 rounding.

    Args:
        x: ``[..., K]``.
        weight: ``[N, K]`` (``nn.Linear`` layout).
        bias: ``[N]`` or ``None``.
        accum_chunk: see :func:`bf16acc_matmul`.

    Returns:
        ``[..., N]`` bf16.
    """
    return accum_linear(x, weight, bias, accum_chunk)


def add_bias(y: torch.Tensor, bias: torch.Tensor | None, spec: AccumSpec) -> torch.Tensor:
    """Epilogue bias: ``RN_acc(y + RN_acc(bias))`` in fp32, round to nearest whatever the sum's mode."""
    if bias is None:
        return y
    fmt = spec.acc_format
    with torch.autocast(device_type=y.device.type, enabled=False):
        out = round_to_format(y.float() + round_to_format(bias.float(), fmt), fmt)
    return out.to(y.dtype)


def add_bias_bf16(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``RNE_bf16(y + RNE_bf16(bias))`` in fp32; shared by every backend so they agree bit for bit."""
    return add_bias(y, bias, AccumSpec())


def reference_matmul_fp64(a: torch.Tensor, b: torch.Tensor, operands: str = "bf16") -> torch.Tensor:
    """Exact-ish reference: operands rounded to ``operands``, float64 products and sum (error studies)."""
    return round_to_format(a, operands).double() @ round_to_format(b, operands).double()
