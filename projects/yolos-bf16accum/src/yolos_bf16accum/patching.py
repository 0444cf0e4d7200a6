"""In-place patching of a YOLOS model: which modules each group covers, and how they are switched.

Groups (per encoder block ``i`` unless noted):

* ``qkv``:  ``vit.encoder.layer.i.attention.attention.{query,key,value}``
* ``attn``: the attention core (QKᵀ and PV, through transformers' attention-function mechanism) and
  the attention output projection ``...attention.output.dense``
* ``mlp``:  ``...intermediate.dense`` and ``...output.dense``
* ``head``: ``class_labels_classifier.layers.*`` and ``bbox_predictor.layers.*`` (not per block)

That is every ``nn.Linear`` of the model (12 x 6 + 6 = 78 for yolos-tiny) plus every attention core.

Linears are patched by class swap (``lin.__class__ = BF16AccLinear``): same object, same Parameters,
same ``state_dict`` keys, so an optimizer built before patching keeps stepping the right tensors and the
fp32 masters are never touched. Attention is patched by registering one attention function with
``transformers.AttentionInterface`` and switching it on per ``YolosSelfAttention`` module with the
``bf16acc_chunk`` attribute (``None`` = off, the function falls back to SDPA), so blocks can ramp one
at a time. Nothing is monkey-patched on a class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from yolos_bf16accum.emulation import check_accum_chunk
from yolos_bf16accum.ste import BF16AccLinear, bf16acc_attention, check_backend

GROUPS = ("attn", "mlp", "qkv", "head")
BLOCK_GROUPS = ("attn", "mlp", "qkv")
ATTN_IMPLEMENTATION = "bf16acc"


# ---- linears ---------------------------------------------------------------------------------------

def patch_linear(lin: nn.Linear, accum_chunk: int = 1, backend: str = "auto") -> nn.Linear:
    """Makes ``lin`` accumulate in bf16 in its forward, in place (see the module docstring)."""
    if not isinstance(lin, nn.Linear):
        raise TypeError(f"expected an nn.Linear, got {type(lin).__name__}")
    if type(lin) not in (nn.Linear, BF16AccLinear):
        raise TypeError(f"refusing to class-swap a {type(lin).__name__} (a subclass with its own forward)")
    # Validate before the class swap: a bad argument must leave the module untouched.
    accum_chunk, backend = check_accum_chunk(accum_chunk), check_backend(backend)
    lin.__class__ = BF16AccLinear
    lin.accum_chunk = accum_chunk
    lin.bf16acc_backend = backend
    return lin


def unpatch_linear(lin: nn.Linear) -> nn.Linear:
    """Undoes :func:`patch_linear` (a no-op on a plain ``nn.Linear``)."""
    if type(lin) is BF16AccLinear:
        lin.__class__ = nn.Linear
        for name in ("accum_chunk", "bf16acc_backend"):
            lin.__dict__.pop(name, None)
    return lin


def is_patched(module: nn.Module) -> bool:
    """True for a patched Linear or an attention module with the bf16-accum flag on."""
    return type(module) is BF16AccLinear or getattr(module, "bf16acc_chunk", None) is not None


# ---- attention -------------------------------------------------------------------------------------

def bf16acc_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, scaling: float | None = None,
                              dropout: float = 0.0, **kwargs):
    """Attention function for ``AttentionInterface``: bf16-accum where ``module.bf16acc_chunk`` is set.

    Args follow transformers' attention-function contract: q/k/v ``[B, heads, S, D]``; returns
    ``(out [B, S, heads, D], None)``.
    """
    chunk = getattr(module, "bf16acc_chunk", None)
    if chunk is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if attention_mask is not None:
        raise NotImplementedError("bf16-accum attention takes no attention mask (YOLOS passes none)")
    if dropout:
        raise NotImplementedError("bf16-accum attention has no attention-probability dropout; "
                                  "set attention_probs_dropout_prob=0 (yolos-tiny's value)")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    backend = getattr(module, "bf16acc_backend", "auto")
    out = bf16acc_attention(query, key, value, scaling, chunk, backend)
    return out.transpose(1, 2).contiguous(), None


def install_attention_function(model: nn.Module) -> None:
    """Registers :func:`bf16acc_attention_forward` as ``"bf16acc"`` and selects it for ``model``.

    With every module flag off the function is SDPA, so installing changes no numbers by itself.
    The registry is transformers' process-wide one; registering the same function again is harmless.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, bf16acc_attention_forward)
    model.set_attn_implementation(ATTN_IMPLEMENTATION)


def set_attention(module: nn.Module, accum_chunk: int | None, backend: str = "auto") -> None:
    """Turns bf16-accum on (``accum_chunk`` int) or off (``None``) for one self-attention module."""
    if accum_chunk is None:
        module.__dict__.pop("bf16acc_chunk", None)
        module.__dict__.pop("bf16acc_backend", None)
        return
    module.bf16acc_chunk = check_accum_chunk(accum_chunk)
    module.bf16acc_backend = check_backend(backend)


# ---- groups ----------------------------------------------------------------------------------------

def encoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The ``YolosLayer`` list of a ``YolosForObjectDetection`` (or a ``YolosModel``)."""
    vit = getattr(model, "vit", model)
    try:
        return vit.encoder.layer
    except AttributeError as e:
        raise TypeError(f"{type(model).__name__} does not look like a YOLOS model (no vit.encoder.layer)") from e


def group_linears(model: nn.Module, group: str, block: int | None = None) -> list[nn.Linear]:
    """The Linears of ``group`` in encoder block ``block`` (``head``: the detection heads, no block)."""
    if group == "head":
        return [m for name in ("class_labels_classifier", "bbox_predictor")
                for m in getattr(model, name).modules() if isinstance(m, nn.Linear)]
    layer = encoder_blocks(model)[block]
    if group == "qkv":
        sa = layer.attention.attention
        return [sa.query, sa.key, sa.value]
    if group == "attn":
        return [layer.attention.output.dense]
    if group == "mlp":
        return [layer.intermediate.dense, layer.output.dense]
    raise ValueError(f"unknown group {group!r}; expected one of {', '.join(GROUPS)}")


def apply_patch_state(model: nn.Module, state: Mapping[str, Iterable[int]], accum_chunk: int = 1,
                      backend: str = "auto") -> dict[str, int]:
    """Patches exactly what ``state`` names and unpatches everything else.

    Args:
        model: a ``YolosForObjectDetection`` (the attention function must be installed for ``attn``).
        state: ``{group: blocks}``; for ``head`` any non-empty iterable means on.
        accum_chunk, backend: kernel settings for the modules switched on.

    Returns:
        Counts ``{"linears": n, "attention": n}`` of patched modules after the call.
    """
    unknown = set(state) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown group(s) {sorted(unknown)}; expected {', '.join(GROUPS)}")
    blocks = encoder_blocks(model)
    if "attn" in state and state["attn"] and model.config._attn_implementation != ATTN_IMPLEMENTATION:
        raise RuntimeError("call install_attention_function(model) before enabling the attn group")
    for group in BLOCK_GROUPS:
        on = set(state.get(group, ()))
        bad = [b for b in on if not 0 <= b < len(blocks)]
        if bad:
            raise ValueError(f"group {group}: block(s) {bad} out of range for {len(blocks)} blocks")
        for i, layer in enumerate(blocks):
            for lin in group_linears(model, group, i):
                patch_linear(lin, accum_chunk, backend) if i in on else unpatch_linear(lin)
            if group == "attn":
                set_attention(layer.attention.attention, accum_chunk if i in on else None, backend)
    head_on = bool(list(state.get("head", ())))
    for lin in group_linears(model, "head"):
        patch_linear(lin, accum_chunk, backend) if head_on else unpatch_linear(lin)
    return count_patched(model)


def count_patched(model: nn.Module) -> dict[str, int]:
    """``{"linears": patched Linears, "attention": attention modules with the flag on}``."""
    linears = sum(type(m) is BF16AccLinear for m in model.modules())
    attention = sum(getattr(m, "bf16acc_chunk", None) is not None for m in model.modules())
    return {"linears": linears, "attention": attention}


def patch_all(model: nn.Module, accum_chunk: int = 1, backend: str = "auto") -> dict[str, int]:
    """Every group in every block (the end state of any progressive schedule)."""
    install_attention_function(model)
    n = len(encoder_blocks(model))
    return apply_patch_state(model, {g: range(n) for g in BLOCK_GROUPS} | {"head": [0]}, accum_chunk, backend)
