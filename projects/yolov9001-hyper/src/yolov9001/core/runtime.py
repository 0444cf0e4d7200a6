"""``attach_runtime``: one place that finalises a model's runtime fields (called by 9001.py after loading
weights and before train / val / inference).

1. finds the Detect module (``model.detect_layer``);
2. infers the level strides with a no-grad forward at ``imgsz`` (``detect.last_shapes`` -> ``detect.strides``);
3. sets ``model.nc``, ``model.reg_max``, ``model.strides``, ``model.detect_layer``;
4. creates or updates ``model.decoder`` (a ``DFLDecoder`` with ``reg_max``, strides, ``dfl_tau``);
5. attaches ``model.postprocessor`` with the config's thresholds.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.head import Detect
from ..utils.boxes import DFLDecoder
from ..utils.postprocess import Postprocessor


def find_detect(model: nn.Module) -> tuple[int, Detect]:
    """(index in ``model.model``, module) of the Detect head; a clear error when there is none."""
    layers = getattr(model, "model", None)
    if isinstance(layers, nn.Sequential):
        for i, m in enumerate(layers):
            if isinstance(m, Detect):
                return i, m
    for m in model.modules():
        if isinstance(m, Detect):
            return -1, m
    raise TypeError(f"{type(model).__name__} has no Detect head; a custom model must expose one "
                    f"(see DetectModelBase.parse_model)")


@torch.no_grad()
def infer_strides(model: nn.Module, detect: Detect, imgsz: int) -> tuple[int, ...]:
    """Level strides from one forward at ``imgsz`` (eval mode, so BN statistics are untouched)."""
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, imgsz, imgsz, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
    strides = tuple(imgsz // h for h, _ in detect.last_shapes)
    if any(imgsz % h for h, _ in detect.last_shapes):
        raise ValueError(f"imgsz {imgsz} is not divisible by every level's size {detect.last_shapes}")
    return strides


def attach_runtime(model: nn.Module, imgsz: int, cfg=None) -> nn.Module:
    """Sets the runtime fields listed in the module docstring; returns ``model``. Idempotent."""
    from .config import YOLOConfig

    cfg = cfg if cfg is not None else YOLOConfig()
    index, detect = find_detect(model)
    strides = infer_strides(model, detect, imgsz)
    detect.strides = strides
    model.nc, model.reg_max, model.strides = detect.nc, detect.reg_max, strides
    model.detect_layer = index
    decoder = getattr(model, "decoder", None)
    if isinstance(decoder, DFLDecoder):
        decoder.reg_max, decoder.strides, decoder.nc = detect.reg_max, strides, detect.nc
        decoder.tau = float(cfg["dfl_tau"])
        decoder._key = None
    else:
        model.decoder = DFLDecoder(detect.reg_max, strides, detect.nc, tau=cfg["dfl_tau"],
                                   centered=cfg["decode_centered"]).to(next(model.parameters()).device)
    model.postprocessor = Postprocessor.from_config(cfg)
    return model
