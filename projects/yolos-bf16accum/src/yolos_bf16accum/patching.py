"""In-place patching of a YOLOS model: which modules each group covers, and how they are switched.

Groups (per encoder block ``i`` unless noted):

* ``qkv``:  ``vit.encoder.layer.i.attention.attention.{query,key,value}``
* ``attn``: the attention core (QKᵀ and PV, through transformers' attention-function mechanism) and
  the attention output projection ``...attention.output.dense``
* ``mlp``:  ``...intermediate.dense`` and ``...output.dense``
* ``head``: ``class_labels_classifier.layers.*`` and ``bbox_predictor.layers.*`` (not per block)
* ``patch_embed``: the patch-embedding convolution ``vit.embeddings.patch_embeddings.projection``
  (kernel = stride = 16, so it is a K = 3*16*16 = 768 matmul over patches; not per block)

That is every ``nn.Linear`` of the model (12 x 6 + 6 = 78 for yolos-tiny), every attention core and
the patch embedding: every matmul of the forward pass.

The datapath of each patched module is an :class:`~yolos_bf16accum.spec.AccumSpec`. One spec (or an int
chunk) applies to all groups; a mapping gives per-group specs (:func:`resolve_specs`), e.g. a PV chunk
larger than QKᵀ's (PV reduces over the sequence, ~1-3k; QKᵀ over the head dim, 64).

Linears are patched by class swap (``lin.__class__ = BF16AccLinear``): same object, same Parameters,
same ``state_dict`` keys, so an optimizer built before patching keeps stepping the right tensors and the
fp32 masters are never touched. Attention is patched by registering one attention function with
``transformers.AttentionInterface`` and switching it on per ``YolosSelfAttention`` module with the
``bf16acc_chunk`` attribute (``None`` = off, the function falls back to SDPA), so blocks can ramp one
at a time. Nothing is monkey-patched on a class.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from yolos_bf16accum.spec import AccumSpec, as_spec
from yolos_bf16accum.ste import BF16AccLinear, BF16AccPatchConv, bf16acc_attention, call_spec, check_backend, next_call

GROUPS = ("attn", "mlp", "qkv", "head", "patch_embed")
BLOCK_GROUPS = ("attn", "mlp", "qkv")
WHOLE_GROUPS = ("head", "patch_embed")
# keys a per-group spec mapping may use: the groups, plus the attention core's two matmuls apart
SPEC_KEYS = ("default", "qkv", "attn", "qk", "pv", "mlp", "head", "patch_embed")
ATTN_IMPLEMENTATION = "bf16acc"


def resolve_specs(accum: int | AccumSpec | Mapping[str, AccumSpec | int]) -> dict[str, AccumSpec]:
    """One spec, an int chunk or ``{key: spec}`` -> a spec for every role.

    Roles: ``qkv``, ``attn`` (the attention output projection), ``qk``/``pv`` (the core's two matmuls;
    default: ``attn``'s), ``mlp``, ``head``, ``patch_embed``; a missing key takes ``default`` (else the
    seed's per-MAC bf16 spec).
    """
    if not isinstance(accum, Mapping):
        accum = {"default": accum}
    bad = set(accum) - set(SPEC_KEYS)
    if bad:
        raise ValueError(f"unknown spec key(s) {sorted(bad)}; expected {', '.join(SPEC_KEYS)}")
    base = as_spec(accum.get("default", 1))
    out = {k: as_spec(accum[k]) if k in accum else base for k in ("qkv", "attn", "mlp", "head", "patch_embed")}
    out["qk"] = as_spec(accum["qk"]) if "qk" in accum else out["attn"]
    out["pv"] = as_spec(accum["pv"]) if "pv" in accum else out["attn"]
    return out


# ---- linears ---------------------------------------------------------------------------------------

_PATCH_ATTRS = ("accum_chunk", "bf16acc_spec", "bf16acc_backend", "bf16acc_calls", "bf16acc_stream")


def patch_linear(lin: nn.Linear, accum_chunk: int | AccumSpec = 1, backend: str = "auto") -> nn.Linear:
    """Makes ``lin`` accumulate in reduced precision in its forward, in place (see the module docstring)."""
    if not isinstance(lin, nn.Linear):
        raise TypeError(f"expected an nn.Linear, got {type(lin).__name__}")
    if type(lin) not in (nn.Linear, BF16AccLinear):
        raise TypeError(f"refusing to class-swap a {type(lin).__name__} (a subclass with its own forward)")
    _swap_in(lin, BF16AccLinear, accum_chunk, backend)
    lin.accum_chunk = lin.bf16acc_spec.chunk
    return lin


def unpatch_linear(lin: nn.Linear) -> nn.Linear:
    """Undoes :func:`patch_linear` (a no-op on a plain ``nn.Linear``)."""
    return _swap_out(lin, BF16AccLinear, nn.Linear)


def _swap_in(module: nn.Module, cls: type, accum, backend: str) -> None:
    # Validate before the class swap: a bad argument must leave the module untouched.
    spec, backend = as_spec(accum), check_backend(backend)
    module.__class__ = cls
    module.bf16acc_spec = spec
    module.bf16acc_backend = backend


def _swap_out(module: nn.Module, cls: type, plain: type) -> nn.Module:
    if type(module) is cls:
        module.__class__ = plain
        for name in _PATCH_ATTRS:
            module.__dict__.pop(name, None)
    return module


def patch_conv(conv: nn.Conv2d, accum: int | AccumSpec = 1, backend: str = "auto") -> nn.Conv2d:
    """Makes a patchifying ``Conv2d`` (kernel = stride, no padding) accumulate in reduced precision, in place."""
    if type(conv) not in (nn.Conv2d, BF16AccPatchConv):
        raise TypeError(f"expected a plain nn.Conv2d, got {type(conv).__name__}")
    BF16AccPatchConv.check_patchify(conv)
    _swap_in(conv, BF16AccPatchConv, accum, backend)
    return conv


def unpatch_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """Undoes :func:`patch_conv`."""
    return _swap_out(conv, BF16AccPatchConv, nn.Conv2d)


def patch_embedding_conv(model: nn.Module) -> nn.Conv2d:
    """The patch-embedding convolution of a YOLOS model."""
    vit = getattr(model, "vit", model)
    try:
        return vit.embeddings.patch_embeddings.projection
    except AttributeError as e:
        raise TypeError(f"{type(model).__name__} has no vit.embeddings.patch_embeddings.projection") from e


def is_patched(module: nn.Module) -> bool:
    """True for a patched Linear/patch conv or an attention module with the flag on."""
    return type(module) in (BF16AccLinear, BF16AccPatchConv) or getattr(module, "bf16acc_chunk", None) is not None


# ---- attention -------------------------------------------------------------------------------------

def bf16acc_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, scaling: float | None = None,
                              dropout: float = 0.0, **kwargs):
    """Attention function for ``AttentionInterface``: bf16-accum where ``module.bf16acc_chunk`` is set.

    Args follow transformers' attention-function contract: q/k/v ``[B, heads, S, D]``; returns
    ``(out [B, S, heads, D], None)``.
    """
    spec = getattr(module, "bf16acc_spec", None)
    if getattr(module, "bf16acc_chunk", None) is None or spec is None:
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
    spec_pv = getattr(module, "bf16acc_spec_pv", spec)
    call = next_call(module)
    out = bf16acc_attention(query, key, value, scaling, call_spec(module, spec, call), backend,
                            spec_pv=call_spec(module, spec_pv, call, stream=1))
    probe = module.__dict__.get("bf16acc_probe")
    if probe is not None:  # layer_errors(): this core's own error vs fp32 attention on the same q, k, v
        from yolos_bf16accum.ste import standard_attention

        with torch.autocast(query.device.type, enabled=False):   # a real fp32 reference under AMP
            ref = standard_attention(query, key, value, scaling)
        probe["error"] = float((out.float() - ref).norm() / ref.norm().clamp_min(1e-30))
    return out.transpose(1, 2).contiguous(), None


def install_attention_function(model: nn.Module) -> None:
    """Registers :func:`bf16acc_attention_forward` as ``"bf16acc"`` and selects it for ``model``.

    With every module flag off the function is SDPA, so installing changes no numbers by itself.
    The registry is transformers' process-wide one; registering the same function again is harmless.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, bf16acc_attention_forward)
    model.set_attn_implementation(ATTN_IMPLEMENTATION)


def set_attention(module: nn.Module, accum_chunk: int | AccumSpec | None, backend: str = "auto",
                  spec_pv: int | AccumSpec | None = None) -> None:
    """Turns reduced-precision accumulation on (a spec or int chunk for QKᵀ; ``spec_pv`` for PV, default the
    same) or off (``None``) for one self-attention module. ``bf16acc_chunk`` is the on/off flag."""
    if accum_chunk is None:
        for name in ("bf16acc_chunk", "bf16acc_spec", "bf16acc_spec_pv", "bf16acc_backend", "bf16acc_calls",
                     "bf16acc_stream"):
            module.__dict__.pop(name, None)
        return
    spec = as_spec(accum_chunk)
    pv = spec if spec_pv is None else as_spec(spec_pv)
    module.bf16acc_backend = check_backend(backend)
    module.bf16acc_spec, module.bf16acc_spec_pv = spec, pv
    module.bf16acc_chunk = spec.chunk


# ---- groups ----------------------------------------------------------------------------------------

def encoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The ``YolosLayer`` list of a ``YolosForObjectDetection`` (or a ``YolosModel``)."""
    vit = getattr(model, "vit", model)
    try:
        return vit.encoder.layer
    except AttributeError as e:
        raise TypeError(f"{type(model).__name__} does not look like a YOLOS model (no vit.encoder.layer)") from e


def group_linears(model: nn.Module, group: str, block: int | None = None) -> list[nn.Linear]:
    """The Linears of ``group`` in encoder block ``block`` (``head``: the detection heads, no block;
    ``patch_embed`` has none: see :func:`patch_embedding_conv`)."""
    if group == "patch_embed":
        return []
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


def apply_patch_state(model: nn.Module, state: Mapping[str, Iterable[int]],
                      accum_chunk: int | AccumSpec | Mapping[str, AccumSpec | int] = 1,
                      backend: str = "auto") -> dict[str, int]:
    """Patches exactly what ``state`` names and unpatches everything else.

    Args:
        model: a ``YolosForObjectDetection`` (the attention function must be installed for ``attn``).
        state: ``{group: blocks}``; for ``head``/``patch_embed`` any non-empty iterable means on.
        accum_chunk: the datapath of the modules switched on: an int chunk, a spec, or per-group specs
            (:func:`resolve_specs`).
        backend: kernel backend for them.

    Returns:
        Counts ``{"linears": n, "attention": n}`` of patched modules after the call.
    """
    unknown = set(state) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown group(s) {sorted(unknown)}; expected {', '.join(GROUPS)}")
    specs = resolve_specs(accum_chunk)
    check_backend(backend)
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
                patch_linear(lin, specs[group], backend) if i in on else unpatch_linear(lin)
            if group == "attn":
                set_attention(layer.attention.attention, specs["qk"] if i in on else None, backend, specs["pv"])
    head_on = bool(list(state.get("head", ())))
    for lin in group_linears(model, "head"):
        patch_linear(lin, specs["head"], backend) if head_on else unpatch_linear(lin)
    conv = patch_embedding_conv(model)
    if list(state.get("patch_embed", ())):
        patch_conv(conv, specs["patch_embed"], backend)
    else:
        unpatch_conv(conv)
    # stochastic rounding: one stream per module, from its name (stable across runs and ranks)
    for name, m in model.named_modules():
        if is_patched(m):
            m.bf16acc_stream = zlib.crc32(name.encode())
    return count_patched(model)


def count_patched(model: nn.Module) -> dict[str, int]:
    """``{"linears": patched Linears, "attention": attention modules with the flag on, "convs": patch convs}``."""
    linears = sum(type(m) is BF16AccLinear for m in model.modules())
    attention = sum(getattr(m, "bf16acc_chunk", None) is not None for m in model.modules())
    convs = sum(type(m) is BF16AccPatchConv for m in model.modules())
    return {"linears": linears, "attention": attention, "convs": convs}


def patch_all(model: nn.Module, accum_chunk: int | AccumSpec | Mapping = 1, backend: str = "auto",
              patch_embed: bool = False) -> dict[str, int]:
    """Every group in every block (the end state of the seed's schedule); ``patch_embed`` adds the patch conv."""
    install_attention_function(model)
    n = len(encoder_blocks(model))
    state = {g: range(n) for g in BLOCK_GROUPS} | {"head": [0]} | ({"patch_embed": [0]} if patch_embed else {})
    return apply_patch_state(model, state, accum_chunk, backend)
