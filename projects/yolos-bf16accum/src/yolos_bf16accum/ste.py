"""Straight-through (STE) autograd functions: bf16-accumulating forward, standard backward.

The forward pass is what the low-precision hardware would compute; the backward pass returns the exact
gradients of the standard (fp32-accumulating) op at the same inputs. Parameters never change dtype: the
fp32 master weights are cast inside the forward (upstream cast them to bf16 in place, which breaks AdamW
state and loses ~44% of small updates).
"""

from __future__ import annotations

import torch

from yolos_bf16accum.emulation import add_bias_bf16, bf16acc_matmul, check_accum_chunk

BACKENDS = ("auto", "emulation", "triton")


def check_backend(backend: str) -> str:
    """Validates a kernel backend name (``auto``, ``emulation`` or ``triton``)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown bf16-accum backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def matmul(a: torch.Tensor, b: torch.Tensor, accum_chunk: int, backend: str = "auto") -> torch.Tensor:
    """Dispatches a bf16-accumulating ``a @ b`` (bf16 result) to the emulation or the Triton kernel.

    ``auto`` takes Triton on CUDA and the emulation elsewhere; ``triton`` on a CPU tensor runs the
    Triton interpreter (exact but seconds per small product: tests only).
    """
    check_backend(backend)
    if backend == "emulation" or (backend == "auto" and a.device.type != "cuda"):
        return bf16acc_matmul(a, b, accum_chunk)
    from yolos_bf16accum.triton_kernels import triton_bf16acc_matmul  # imports triton: lazily

    return triton_bf16acc_matmul(a, b, accum_chunk)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul in here (``x.dtype`` when autocast is off)."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


class BF16AccLinearFn(torch.autograd.Function):
    """``y = x @ W.T + b`` with a bf16-accumulating forward and ``nn.Linear``'s backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, accum_chunk: int, backend: str):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = matmul(x.reshape(-1, x.shape[-1]), weight.t(), accum_chunk, backend)
        y = add_bias_bf16(y, bias).reshape(*x.shape[:-1], weight.shape[0])
        # Same dtype as the input: downstream ops (LayerNorm with fp32 weights) see what they expect.
        # The values stay bf16-representable.
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = g2.mm(weight).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            grad_w = g2.t().mm(x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b, None, None


class BF16AccLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose forward accumulates in bf16. Only ever made by class swap.

    :func:`yolos_bf16accum.patching.patch_linear` sets ``lin.__class__ = BF16AccLinear`` and the two
    attributes below; the module keeps its Parameters, buffers, hooks and ``state_dict`` keys, so the
    optimizer's references stay valid. ``unpatch_linear`` swaps back.

    Attributes:
        accum_chunk: products summed in fp32 before each bf16 rounding (1 = per-MAC).
        bf16acc_backend: ``auto``, ``emulation`` or ``triton``.
    """

    accum_chunk: int = 1
    bf16acc_backend: str = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype(x)
        # Differentiable casts: under autocast the Function sees bf16/fp16 tensors (as nn.Linear's
        # matmul would) and the weight gradient flows back to the fp32 master through the cast.
        w = self.weight.to(dtype)
        b = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return BF16AccLinearFn.apply(x.to(dtype), w, b, self.accum_chunk, self.bf16acc_backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, accum_chunk={self.accum_chunk}, backend={self.bf16acc_backend}"


def standard_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float) -> torch.Tensor:
    """softmax(q kᵀ s) v in fp32 math; the function whose gradient the STE uses."""
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scaling
    return torch.matmul(scores.softmax(-1), v.float())


class BF16AccAttentionFn(torch.autograd.Function):
    """Attention core with bf16-accumulating QKᵀ and PV; backward = standard attention's gradient.

    Inputs are ``[B, heads, S, D]``; the softmax runs in fp32 (only the two matmuls accumulate in bf16).
    """

    @staticmethod
    def forward(ctx, q, k, v, scaling: float, accum_chunk: int, backend: str):
        ctx.save_for_backward(q, k, v)
        ctx.scaling = scaling
        scores = matmul(q, k.transpose(-1, -2), accum_chunk, backend).float() * scaling
        probs = scores.softmax(-1)
        out = matmul(probs, v, accum_chunk, backend)
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        # Recompute the standard attention and differentiate it: exact STE, and cheap next to the
        # emulated forward. Costs one S x S score matrix per head, like the forward.
        with torch.enable_grad():
            qq, kk, vv = (t.detach().requires_grad_(True) for t in (q, k, v))
            out = standard_attention(qq, kk, vv, ctx.scaling)
            gq, gk, gv = torch.autograd.grad(out, (qq, kk, vv), grad_out.float())
        return gq.to(q.dtype), gk.to(k.dtype), gv.to(v.dtype), None, None, None


def bf16acc_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float,
                      accum_chunk: int = 1, backend: str = "auto") -> torch.Tensor:
    """``[B, h, S, D]`` attention output with bf16-accumulating matmuls and an STE backward."""
    check_accum_chunk(accum_chunk)
    with torch.autocast(device_type=q.device.type, enabled=False):
        return BF16AccAttentionFn.apply(q, k, v, float(scaling), accum_chunk, backend)

