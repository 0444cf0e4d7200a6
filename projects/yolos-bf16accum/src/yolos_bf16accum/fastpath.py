"""Chunk sums by BLAS, used only where a probe shows the BLAS sums a chunk in k order.

The emulation's definition sums each chunk's products in k order. Walking K one outer product at a time
(the exact loop) costs K passes over the M x N tile; one fp32 GEMM per chunk (``a[:, :, k0:k0+C] @
b[:, k0:k0+C]``, strided slices, no copies) gives the same chunk sum in one BLAS call. That is
bit-identical *only if* the BLAS kernel sums each length-C dot product in k order starting from +0,
which no BLAS promises (blocked kernels split K, vector kernels keep several partial sums). So the first
call for a (device, threads, matmul-precision flags, batch count, M, N, K, C) runs a probe: operands whose products span ~2^+-24
(almost every other summation order rounds differently), plus rows of -0 products (a sum started from
the first product instead of +0 gives -0), are summed both ways over every chunk, in the call's own
layout; the fast path is used for that shape only if every bit agrees,
else the exact loop runs. :data:`PROBES` records each verdict and :func:`yolos_bf16accum.emulation.path_for`
names the path a call takes.
"""

from __future__ import annotations

import torch

# (device type, threads, batched, M, N, K, chunk) -> the probe's verdict. A cache filled at first use.
PROBES: dict[tuple, bool] = {}


# Reused fp32 scratch tensors, one per (name, device): the chunk-sum and fp32-mirror buffers (each the
# size of the largest output seen) and the rounded a operand (the largest a seen: for attention PV that
# is B x heads x S^2, ~121 MB at batch 8, 512^2). Grown on demand, never shrunk.
_SCRATCH: dict[tuple, torch.Tensor] = {}


def scratch(name: str, shape: tuple[int, ...], device) -> torch.Tensor:
    """An uninitialised fp32 tensor of ``shape`` backed by a reused buffer (never returned to callers:
    the emulation only uses it within one call; not thread-safe, like the rest of a training step)."""
    key = (name, torch.device(device))
    n = 1
    for d in shape:
        n *= d
    buf = _SCRATCH.get(key)
    if buf is None or buf.numel() < n:
        # a normal tensor even when first asked for under torch.inference_mode (evaluation): an inference
        # tensor could not be written in place by a later training step
        with torch.inference_mode(False):
            buf = torch.empty(max(n, 1), dtype=torch.float32, device=device)
        _SCRATCH[key] = buf
    return buf[:n].view(shape)


def chunk_starts(K: int, chunk: int) -> range:
    return range(0, K, chunk)


def chunk_sum(a: torch.Tensor, b: torch.Tensor, k0: int, chunk: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """The fast path's sum of products k0 .. k0+chunk-1: ``[B, M, K] x [B, K, N] -> [B, M, N]`` (fp32)."""
    return torch.bmm(a[:, :, k0:k0 + chunk], b[:, k0:k0 + chunk, :], out=out)


def k_order_sum(at: torch.Tensor, b: torch.Tensor, k0: int, chunk: int) -> torch.Tensor:
    """The definition's chunk sum: from +0, one product at a time in k order (``at`` is ``[B, K, M]``)."""
    c = torch.zeros(at.shape[0], at.shape[2], b.shape[2], dtype=torch.float32, device=at.device)
    for k in range(k0, min(k0 + chunk, at.shape[1])):
        c.addcmul_(at[:, k, :, None], b[:, k, None, :])
    return c


def _probe_operands(batches: int, m: int, k: int, n: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def spread(*shape):
        # 8-bit significands, exponents over +-12, both signs: bf16-representable, so products are exact
        mant = 1 + torch.randint(0, 128, shape, generator=g).float() / 128
        sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
        return sign * mant * torch.exp2(torch.randint(-12, 13, shape, generator=g).float())

    a, b = spread(batches, m, k), spread(batches, k, n).abs()
    # rows of -0 products (-0 x positive b): a sum started from +0 gives +0, one started from the first
    # product gives -0. (b positive loses nothing: a's signs and the exponent spread make other orders
    # round differently.)
    a[:, : max(1, m // 8)] = -0.0
    return a.to(device), b.to(device)


def bmm_is_k_order(batches: int, m: int, n: int, k: int, chunk: int, device: torch.device) -> bool:
    """The probe (cached per shape): does this BLAS sum ``[m, chunk] @ [chunk, n]`` slices in k order?"""
    device = torch.device(device)
    # everything a BLAS may choose its kernel by: device, threads, TF32/precision flags, the batch count
    # and the full shape (K fixes the slices' leading dimension)
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    key = (str(device), torch.get_num_threads(), torch.get_float32_matmul_precision(), tf32,
           batches, m, n, k, chunk)
    if key not in PROBES:
        ok = True
        starts = list(chunk_starts(k, chunk))     # every slice offset: one pass of the exact loop
        with torch.autocast(device_type=device.type, enabled=False), torch.no_grad():
            for seed in (0, 1):
                a, b = _probe_operands(batches, m, k, n, seed, device)
                at = a.transpose(1, 2).contiguous()
                for k0 in starts:
                    fast, exact = chunk_sum(a, b, k0, chunk), k_order_sum(at, b, k0, chunk)
                    if not torch.equal(fast.view(torch.int32), exact.view(torch.int32)):
                        ok = False
                        break
                if not ok:
                    break
        PROBES[key] = ok
        if not ok:   # say it once: the exact loop is several times slower
            import logging

            logging.getLogger(__name__).info("BLAS does not sum %dx%d @ %dx%d chunks in k order (batches %d, "
                                             "K %d): exact loop", m, chunk, chunk, n, batches, k)
    return PROBES[key]
