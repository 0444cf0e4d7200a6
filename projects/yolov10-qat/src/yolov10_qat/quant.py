"""Brevitas W4A16: which convs get 4-bit weights, the swap itself, and the strip/restore used by checkpoints.

W4A16 = weight-only fake quantization: every selected ``nn.Conv2d`` becomes a ``brevitas.nn.QuantConv2d``
whose weight goes through a signed, narrow-range, per-output-channel quantizer (``Int8WeightPerChannelFloat``
with ``weight_bit_width=4``: levels -7..7, scale = max|W_c| / 7 from the latent weight's statistics, STE
gradients). Inputs, outputs and bias stay float (``input_quant``/``output_quant``/``bias_quant=None``).
Per-channel STATS scales are what make BatchNorm folding at export exact: folding multiplies a channel by a
constant, and its scale moves with it, so the integer codes do not change.

Layer selection (names of the YOLOv10 ``DetectionModel``; the head is the last module, ``model.<last>``):

- ``model.<last>.dfl`` is never quantized: its conv holds the fixed ``arange(16)`` integral of the
  distribution focal loss; at 4 bit those become multiples of 15/7 and every box breaks.
- ``w4``: everything else at 4 bit.
- ``w4-fl8``: the first conv and the head's bare output convs (``cv2/cv3/one2one_cv2/one2one_cv3.{i}.2``)
  at 8 bit, the rest at 4 bit (quantized-yolov5's ``[8, 4, ., 8]`` in/out bit widths).

Checkpoints: Brevitas layers cannot be pickled (``Can't pickle <class 'brevitas.inject.NoneActQuant'>``), and
ultralytics checkpoints are pickled modules. :func:`strip_quant` turns a quantized model back into plain
``nn.Conv2d`` layers holding the latent float weights (what gets pickled); :func:`quantize_model` with the
recorded layer map re-applies the quantizers on load. The same idea as ultralytics' own ModelOpt QAT
(``qat_state`` / ``strip_qat`` / ``restore_qat``), done for Brevitas.
"""

from __future__ import annotations

import torch
from torch import nn

BITS = {"w4": 4, "fl8": 8}


def head_name(model: nn.Module) -> str:
    """Name of the detection head (the last entry of ``model.model``), e.g. ``model.23``."""
    return f"model.{len(model.model) - 1}"


def first_and_last_convs(model: nn.Module) -> set[str]:
    """The first conv and the head's bare output convs (the ``w4-fl8`` 8-bit set)."""
    head = head_name(model)
    names = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    first = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    outs = {n for n in names if n.startswith(head + ".") and n.split(".")[2] in ("cv2", "cv3", "one2one_cv2",
                                                                                 "one2one_cv3")
            and n.endswith(".2") and n.count(".") == 4}
    return {first} | outs


def layer_bits(model: nn.Module, scheme: str) -> dict[str, int]:
    """``{conv name: weight bits}`` for every conv the scheme quantizes (the DFL conv is never listed).

    Args:
        model: a float YOLOv10 ``DetectionModel`` (plain ``nn.Conv2d`` layers).
        scheme: ``"w4"`` or ``"w4-fl8"``.
    """
    if scheme not in ("w4", "w4-fl8"):
        raise ValueError(f"unknown quant scheme {scheme!r}; expected w4 or w4-fl8")
    dfl = head_name(model) + ".dfl"
    eight = first_and_last_convs(model) if scheme == "w4-fl8" else set()
    return {n: (8 if n in eight else 4) for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and not (n == dfl or n.startswith(dfl + "."))}


def quantize_model(model: nn.Module, bits: dict[str, int]) -> nn.Module:
    """Swap the listed ``nn.Conv2d`` layers for weight-only ``QuantConv2d`` in place (weights copied).

    Uses ``brevitas.graph.quantize.layerwise_quantize`` with an explicit map: its default map is *not*
    W4A16 (it adds 8-bit per-tensor weights, 8-bit input activations and 32-bit bias quantization).

    Args:
        model: float model; call before the optimizer and EMA are built so they see the new parameters.
        bits: ``{name: bit width}`` from :func:`layer_bits`; convs not listed stay float.

    Returns:
        The same model object.
    """
    import brevitas.nn as qnn
    from brevitas.graph.quantize import layerwise_quantize
    from brevitas.quant import Int8WeightPerChannelFloat

    float_convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and type(m) is nn.Conv2d]
    missing = sorted(set(bits) - set(float_convs))
    if missing:
        raise ValueError(f"layers {missing[:5]} are not float nn.Conv2d layers of this model")
    blacklist = [n for n in float_convs if n not in bits]
    layer_map = {nn.Conv2d: (qnn.QuantConv2d, dict(
        weight_quant=Int8WeightPerChannelFloat,  # per output channel, STATS (max) scale, narrow range
        weight_bit_width=lambda module, name: bits[name],
        input_quant=None, output_quant=None, bias_quant=None, return_quant_tensor=False))}
    out = layerwise_quantize(model, compute_layer_map=layer_map, name_blacklist=blacklist)
    assert out is model
    return model


def quantized_layers(model: nn.Module) -> dict[str, int]:
    """``{name: bit width}`` of the ``QuantConv2d`` layers in ``model``."""
    from brevitas.nn import QuantConv2d

    return {n: _bit_width(m) for n, m in model.named_modules() if isinstance(m, QuantConv2d)}


def _bit_width(layer: nn.Module) -> int:
    # The proxy's public bit_width() runs the whole weight quantizer (~10 ms a layer); the bit-width module
    # of the tensor quantizer answers the same in microseconds. Fall back if brevitas' internals move.
    impl = getattr(getattr(layer.weight_quant, "tensor_quant", None), "msb_clamp_bit_width_impl", None)
    with torch.no_grad():
        return int(impl() if impl is not None else layer.weight_quant.bit_width())


def strip_quant(model: nn.Module) -> dict[str, int]:
    """Replace every ``QuantConv2d`` by a plain ``nn.Conv2d`` with the same latent weight, in place.

    Returns:
        The ``{name: bits}`` map that :func:`quantize_model` needs to undo this.
    """
    from brevitas.nn import QuantConv2d

    bits = quantized_layers(model)
    for name in bits:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        q: QuantConv2d = getattr(parent, attr)
        conv = nn.Conv2d(q.in_channels, q.out_channels, q.kernel_size, q.stride, q.padding, q.dilation, q.groups,
                         bias=q.bias is not None, padding_mode=q.padding_mode,
                         device=q.weight.device, dtype=q.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(q.weight)
            if q.bias is not None:
                conv.bias.copy_(q.bias)
        conv.weight.requires_grad_(q.weight.requires_grad)
        setattr(parent, attr, conv)
    return bits


def integer_codes(layer: nn.Module, qw=None) -> torch.Tensor:
    """The integer weight codes of a ``QuantConv2d`` (weight / scale, rounded), shape of the weight.

    Args:
        layer: the quantized conv.
        qw: its ``quant_weight()`` if already computed (it re-runs the quantizer: not free).
    """
    qw = layer.quant_weight() if qw is None else qw
    return torch.round(qw.value / qw.scale + qw.zero_point)
