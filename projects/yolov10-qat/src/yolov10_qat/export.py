"""ONNX exports with the ``e2e`` contract of ``yolo_common.onnx_eval``: ``images [N,3,S,S] -> output0 [N,300,6]``.

Both models go through the same steps: load the fp32 weights (for QAT: the ``brevitas_qat`` fp32 copy, never
the fp16 pickle), switch the head to the one-to-one branch (``end2end``), fold BatchNorm into the convs
(:func:`fuse_for_export`), put the head in export mode (top-300 ``x1,y1,x2,y2,score,class`` in letterboxed
pixels), then

- baseline: ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``) at opset 17;
- QAT: ``brevitas.export.export_onnx_qcdq`` with ``dynamo=False, opset_version=17,
  keep_initializers_as_inputs=False, export_weight_q_node=True``: each quantized conv's weight becomes
  ``float initializer -> QuantizeLinear -> Clip[-7,7] -> DequantizeLinear(axis=0)`` (int4 travels as int8 +
  Clip, ONNX Runtime has no int4 conv). The dynamo exporter is avoided: it ignores the requested opset (always 18).

Each file is stamped with ``write_model_metadata(contract="e2e", letterbox=ULTRALYTICS at imgsz, class names)``
so the evaluator preprocesses exactly as ultralytics trains (centred letterbox, pad 114, RGB, /255).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
from torch import nn


def fuse_for_export(model: nn.Module) -> nn.Module:
    """Fold BN into convs and drop the one-to-many head branch, in place; returns the model.

    Unlike ultralytics' ``DetectionModel.fuse`` this never merges ``RepVGGDW``'s two depthwise convs into one
    (it still folds each conv's own BN, which is exact): with quantized weights, quant(W7 + W3) is not
    quant(W7) + quant(W3), so the merged layer would not be the layer that was trained. Costs one extra
    depthwise conv per RepVGGDW block (yolov10n/s have them, yolov10m does not).
    """
    from ultralytics.nn.modules import Conv, Detect, DWConv
    from ultralytics.utils.torch_utils import fuse_conv_and_bn

    for m in model.modules():
        if isinstance(m, (Conv, DWConv)) and hasattr(m, "bn"):
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse
        if isinstance(m, Detect):
            m.fuse()
    return model


def prepare_for_export(model: nn.Module) -> nn.Module:
    """fp32, eval, one-to-one head, BN folded, head in ONNX export mode (``[N,300,6]`` output)."""
    model = model.float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.end2end = True  # DetectionModel's setter: the NMS-free one-to-one head (what nms=False validates)
    fuse_for_export(model)
    head = model.model[-1]
    head.export, head.format, head.dynamic = True, "onnx", True
    return model


def _dummy(imgsz: int) -> torch.Tensor:
    return torch.zeros(1, 3, imgsz, imgsz)


_IO = dict(input_names=["images"], output_names=["output0"],
           dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}})


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from the head's shape arithmetic: expected
        yield


def export_float_onnx(model: nn.Module, path: str | Path, imgsz: int, *, opset: int = 17) -> Path:
    """Export a prepared float model (:func:`prepare_for_export`) with the TorchScript exporter."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet(), torch.no_grad():
        torch.onnx.export(model, (_dummy(imgsz),), str(path), opset_version=opset, dynamo=False,
                          do_constant_folding=True, **_IO)
    return path


def export_qcdq_onnx(model: nn.Module, path: str | Path, imgsz: int, *, opset: int = 17) -> Path:
    """Export a prepared Brevitas model as QCDQ ONNX (weight Q -> Clip -> DQ per quantized conv)."""
    from brevitas.export import export_onnx_qcdq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet(), torch.no_grad():
        export_onnx_qcdq(model, args=_dummy(imgsz), export_path=str(path), dynamo=False, opset_version=opset,
                         keep_initializers_as_inputs=False, export_weight_q_node=True, **_IO)
    return path


def onnx_name(kind: str, model_yaml: str, imgsz: int, scheme: str | None = None) -> str:
    """File name carrying model, variant, quant scheme and size, e.g. ``yolov10m-qat-w4-qcdq-640.onnx``."""
    stem = Path(model_yaml).stem
    return f"{stem}-baseline-{imgsz}.onnx" if kind == "baseline" else f"{stem}-qat-{scheme}-qcdq-{imgsz}.onnx"


def export_checkpoint(kind: str, weights: str | Path, out_path: str | Path, imgsz: int, class_names, *,
                      opset: int = 17, trust: bool = False) -> Path:
    """Load ``weights`` (``best.pt`` of either trainer), export it and stamp the evaluator metadata.

    Args:
        kind: ``"baseline"`` or ``"qat"``.
        weights: the checkpoint.
        out_path: the ``.onnx`` file to write.
        imgsz: input size (static spatial dims; the batch dim is dynamic).
        class_names: the dataset's class names (index = model class).
        opset: ONNX opset.
        trust: a ``weights`` without its ``.safe.pt`` may be unpickled (``--trust-checkpoint``).
    """
    from yolo_common.onnx_eval import write_model_metadata
    from yolo_common.preprocess import ULTRALYTICS

    from ._env import ultralytics_env
    from .trainer import load_float_checkpoint, load_qat_checkpoint

    ultralytics_env()
    if kind == "baseline":
        model, _ = load_float_checkpoint(weights, trust=trust)
        path = export_float_onnx(prepare_for_export(model), out_path, imgsz, opset=opset)
    elif kind == "qat":
        model, _ = load_qat_checkpoint(weights, trust=trust)
        path = export_qcdq_onnx(prepare_for_export(model), out_path, imgsz, opset=opset)
    else:
        raise ValueError(f"kind must be baseline or qat, got {kind!r}")
    write_model_metadata(path, "e2e", ULTRALYTICS.with_size(imgsz), list(class_names))
    return path


def count_qcdq(path: str | Path) -> dict[str, int]:
    """Node counts of QuantizeLinear / Clip / DequantizeLinear / Conv in an ONNX file."""
    import onnx

    m = onnx.load(str(path))
    ops = [n.op_type for n in m.graph.node]
    return {op: ops.count(op) for op in ("QuantizeLinear", "Clip", "DequantizeLinear", "Conv")}
