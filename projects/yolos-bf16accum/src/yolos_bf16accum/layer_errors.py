"""Per-layer error report: each patched module's output vs its fp32-accumulating self on one fixed batch.

Run at every eval of a progressive run (``logs/layer_errors.jsonl``: step and ``{module: relative error}``;
the eval log gets ``layer_err/max`` and ``layer_err/mean``), and callable on any patched model. The
reference for a Linear or the patch conv is ``F.linear`` / ``F.conv2d`` in fp32 on the *same input* the
patched module received (so errors do not compound across layers: each number is that layer's own
datapath error); for an attention core it is :func:`yolos_bf16accum.ste.standard_attention` on the same
q, k, v. Relative error = ||y - ref|| / ||ref|| (Frobenius). Costs one extra forward on one batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from yolos_bf16accum.ste import BF16AccLinear, BF16AccPatchConv


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref).norm() / ref.norm().clamp_min(1e-30))


@torch.no_grad()
def layer_errors(model: torch.nn.Module, pixel_values: torch.Tensor) -> dict[str, float]:
    """``{module name: relative output error}`` for every patched module, from one forward of ``pixel_values``."""
    errors: dict[str, float] = {}
    hooks = []
    for name, m in model.named_modules():
        if type(m) is BF16AccLinear:
            def hook(mod, inputs, out, name=name):
                x = inputs[0].float()
                with torch.autocast(x.device.type, enabled=False):   # a real fp32 reference under AMP
                    ref = F.linear(x, mod.weight.float(), None if mod.bias is None else mod.bias.float())
                errors[name] = _rel(out, ref)
            hooks.append(m.register_forward_hook(hook))
        elif type(m) is BF16AccPatchConv:
            def hook(mod, inputs, out, name=name):
                with torch.autocast(inputs[0].device.type, enabled=False):
                    ref = F.conv2d(inputs[0].float(), mod.weight.float(),
                                   None if mod.bias is None else mod.bias.float(), stride=mod.stride)
                errors[name] = _rel(out, ref)
            hooks.append(m.register_forward_hook(hook))
        elif getattr(m, "bf16acc_chunk", None) is not None:
            m.bf16acc_probe = {}              # the attention function records (out, ref) here
    was_training = model.training
    model.eval()
    try:
        model(pixel_values=pixel_values)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for name, m in model.named_modules():
        probe = m.__dict__.pop("bf16acc_probe", None)
        if probe:
            errors[f"{name}.core"] = probe["error"]
    return dict(sorted(errors.items()))


def summarize(errors: dict[str, float]) -> dict[str, float]:
    """``layer_err/max``, ``layer_err/mean`` (empty when nothing is patched)."""
    if not errors:
        return {}
    vals = list(errors.values())
    return {"layer_err/max": max(vals), "layer_err/mean": sum(vals) / len(vals)}
