"""Straight-through (STE) autograd functions: bf16-accumulating forward, standard backward.

The forward pass is what the low-precision hardware would compute; the backward pass returns the exact
gradients of the standard (fp32-accumulating) op at the same inputs. Parameters never change dtype: the
fp32 master weights are cast inside the forward (upstream cast them to bf16 in place, which breaks AdamW
state and loses ~44% of small updates).
"""

from __future__ import annotations

import torch

import dataclasses

from yolos_bf16accum.emulation import accum_linear, accum_matmul
from yolos_bf16accum.formats import mix32
from yolos_bf16accum.spec import AccumSpec, as_spec

BACKENDS = ("auto", "emulation", "triton", "triton-dot")


def check_backend(backend: str) -> str:
    """Validates a kernel backend name (``auto``, ``emulation``, ``triton`` or ``triton-dot``)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown bf16-accum backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def matmul(a: torch.Tensor, b: torch.Tensor, spec: AccumSpec | int, backend: str = "auto", *,
           bias_init: torch.Tensor | None = None) -> torch.Tensor:
    """Dispatches an accumulating ``a @ b`` to the emulation or a Triton kernel.

    ``auto`` takes the exact Triton kernel on CUDA and the emulation elsewhere; ``triton`` on a CPU tensor
    runs the Triton interpreter (exact but seconds per small product: tests only); ``triton-dot`` is the
    tensor-core kernel (one ``tl.dot`` per chunk: faster, equal to the definition within a tolerance).
    """
    check_backend(backend)
    if backend == "emulation" or (backend == "auto" and a.device.type != "cuda"):
        return accum_matmul(a, b, spec, bias_init=bias_init)
    from yolos_bf16accum.triton_kernels import triton_accum_matmul  # imports triton: lazily

    return triton_accum_matmul(a, b, spec, bias_init=bias_init, variant="dot" if backend == "triton-dot" else "exact")


def next_call(module: torch.nn.Module) -> int:
    """This module's forward-call number (0, 1, ...): advances once per call, whatever the rounding mode."""
    calls = module.__dict__.get("bf16acc_calls", 0)
    module.bf16acc_calls = calls + 1
    return calls


def call_spec(module: torch.nn.Module, spec: AccumSpec, call: int, stream: int = 0) -> AccumSpec:
    """The spec for one matmul of one forward call: stochastic rounding draws a fresh stream per module
    (``bf16acc_stream``, set from the module's name by ``patching.apply_patch_state``), per call and per
    matmul within the call (``stream``: QKᵀ 0, PV 1), so layers and steps never share a noise pattern while
    a seeded run stays reproducible. Other modes return ``spec`` unchanged."""
    if spec.rounding != "sr":
        return spec
    key = mix32(module.__dict__.get("bf16acc_stream", 0) ^ mix32(call * 2 + stream))
    return dataclasses.replace(spec, seed=int(mix32(spec.seed ^ key)))


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul in here (``x.dtype`` when autocast is off)."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


class BF16AccLinearFn(torch.autograd.Function):
    """``y = x @ W.T + b`` with a reduced-precision-accumulating forward and ``nn.Linear``'s backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, spec: AccumSpec, backend: str):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

        def mm(a, b, sp, bias_init=None):
            return matmul(a, b, sp, backend, bias_init=bias_init)

        y = accum_linear(x, weight, bias, spec, matmul=mm)
        # Same dtype as the input: downstream ops (LayerNorm with fp32 weights) see what they expect.
        # (A bf16 accumulator's values stay bf16-representable; other formats round once more here.)
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
    """An ``nn.Linear`` whose forward accumulates in reduced precision. Only ever made by class swap.

    :func:`yolos_bf16accum.patching.patch_linear` sets ``lin.__class__ = BF16AccLinear`` and the
    attributes below; the module keeps its Parameters, buffers, hooks and ``state_dict`` keys, so the
    optimizer's references stay valid. ``unpatch_linear`` swaps back.

    Attributes:
        bf16acc_spec: the datapath (:class:`AccumSpec`: chunk, formats, rounding, bias placement).
        accum_chunk: ``bf16acc_spec.chunk`` (kept for readers of the old attribute).
        bf16acc_backend: ``auto``, ``emulation``, ``triton`` or ``triton-dot``.
    """

    bf16acc_spec: AccumSpec = AccumSpec()
    accum_chunk: int = 1
    bf16acc_backend: str = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype(x)
        # Differentiable casts: under autocast the Function sees bf16/fp16 tensors (as nn.Linear's
        # matmul would) and the weight gradient flows back to the fp32 master through the cast.
        w = self.weight.to(dtype)
        b = None if self.bias is None else self.bias.to(dtype)
        spec = call_spec(self, self.bf16acc_spec, next_call(self))
        with torch.autocast(device_type=x.device.type, enabled=False):
            return BF16AccLinearFn.apply(x.to(dtype), w, b, spec, self.bf16acc_backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, accum={self.bf16acc_spec.label}, backend={self.bf16acc_backend}"


class BF16AccPatchConv(torch.nn.Conv2d):
    """A patchifying ``Conv2d`` (kernel = stride, no padding: YOLOS/ViT's patch embedding) computed as a
    reduced-precision-accumulating matmul over patches, K = in_channels x kh x kw (768 for 16x16 RGB).

    Non-overlapping patches make the conv exactly ``patches @ W.reshape(O, -1).T``; the unfold is a
    reshape/permute, so autograd carries the STE gradient of :class:`BF16AccLinearFn` back to the image
    and the fp32 master weight. Only ever made by class swap (:func:`yolos_bf16accum.patching.patch_conv`).
    """

    bf16acc_spec: AccumSpec = AccumSpec()
    bf16acc_backend: str = "auto"

    @staticmethod
    def check_patchify(conv: torch.nn.Conv2d) -> None:
        if (tuple(conv.kernel_size) != tuple(conv.stride) or any(p != 0 for p in conv.padding)
                or any(d != 1 for d in conv.dilation) or conv.groups != 1 or conv.padding_mode != "zeros"):
            raise ValueError(f"only a patchifying Conv2d can be patched (kernel = stride, no padding, dilation 1, "
                             f"groups 1); got {conv}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        B, C, H, W = x.shape
        nh, nw = H // kh, W // kw
        dtype = compute_dtype(x)
        patches = (x[:, :, :nh * kh, :nw * kw].reshape(B, C, nh, kh, nw, kw)
                   .permute(0, 2, 4, 1, 3, 5).reshape(B, nh * nw, C * kh * kw))
        w = self.weight.to(dtype).reshape(self.out_channels, -1)
        b = None if self.bias is None else self.bias.to(dtype)
        spec = call_spec(self, self.bf16acc_spec, next_call(self))
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = BF16AccLinearFn.apply(patches.to(dtype), w, b, spec, self.bf16acc_backend)
        return y.reshape(B, nh, nw, self.out_channels).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, accum={self.bf16acc_spec.label}, backend={self.bf16acc_backend}"


def standard_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float) -> torch.Tensor:
    """softmax(q kᵀ s) v in fp32 math; the function whose gradient the STE uses."""
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scaling
    return torch.matmul(scores.softmax(-1), v.float())


class BF16AccAttentionFn(torch.autograd.Function):
    """Attention core with reduced-precision-accumulating QKᵀ and PV; backward = standard attention's gradient.

    Inputs are ``[B, heads, S, D]``; the softmax runs in fp32 (only the two matmuls accumulate in reduced
    precision). ``spec_pv`` may differ from ``spec_qk`` (PV reduces over the sequence, QKᵀ over the head dim).
    """

    @staticmethod
    def forward(ctx, q, k, v, scaling: float, spec_qk: AccumSpec, spec_pv: AccumSpec, backend: str):
        ctx.save_for_backward(q, k, v)
        ctx.scaling = scaling
        scores = matmul(q, k.transpose(-1, -2), spec_qk, backend).float() * scaling
        probs = scores.softmax(-1)
        out = matmul(probs, v, spec_pv, backend)
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
        return gq.to(q.dtype), gk.to(k.dtype), gv.to(v.dtype), None, None, None, None


def bf16acc_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float,
                      accum_chunk: int | AccumSpec = 1, backend: str = "auto",
                      spec_pv: AccumSpec | int | None = None) -> torch.Tensor:
    """``[B, h, S, D]`` attention output with accumulating matmuls and an STE backward.

    ``accum_chunk`` is QKᵀ's spec (an int chunk or an :class:`AccumSpec`); ``spec_pv`` PV's (default: the same).
    """
    spec_qk = as_spec(accum_chunk)
    spec_pv = spec_qk if spec_pv is None else as_spec(spec_pv)
    with torch.autocast(device_type=q.device.type, enabled=False):
        return BF16AccAttentionFn.apply(q, k, v, float(scaling), spec_qk, spec_pv, backend)
