"""ONNX export in ``yolo_common``'s ``raw`` contract, so ``python -m yolo_common.onnx_eval`` scores it.

Graph: images [N, 3, S, S] float (RGB, /255, centred letterbox with 114: ``LetterboxSpec`` from the config,
stamped into the file) -> ``output0`` [N, 4 + nc, A] = cx, cy, w, h in letterboxed pixels, then nc sigmoid
class scores. NMS stays outside (the evaluator runs class-aware ``batched_nms``). Dynamic batch, opset 17,
TorchScript exporter (``dynamo=False``: the dynamo exporter needs onnxscript and ignores the opset). The
hypergraph distance is the matmul form (no ``cdist``), so ONNX Runtime runs the HCM as plain MatMul/Less.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from yolo_common.onnx_eval import export_detector
from yolo_common.preprocess import LetterboxSpec

from ..utils.boxes import dist2bbox
from .ema import unwrap


class RawExport(nn.Module):
    """Model + DFL decode -> the ``raw`` contract tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = unwrap(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dec = self.model.decoder
        feats = self.model(x)
        box, cls = dec.split(feats)
        anchors, strides = dec.anchors(feats)
        xywh = dist2bbox(dec.distances(box), anchors, xywh=True) * strides
        return torch.cat((xywh, cls.sigmoid()), -1).transpose(1, 2)


def letterbox_spec(cfg) -> LetterboxSpec:
    return LetterboxSpec(size=cfg["imgsz"], pad_value=cfg["pad_value"], center=cfg["letterbox_center"], rgb=True,
                         scale=1 / 255, stride=32)


def export_onnx(model: nn.Module, path: str | Path, cfg, names: list[str], opset: int = 17) -> Path:
    """Writes ``path`` (atomically: temp file then rename) and stamps the metadata; returns the path."""
    wrapper = RawExport(model).float().cpu()
    x = torch.zeros(1, 3, cfg["imgsz"], cfg["imgsz"])
    return export_detector(wrapper, x, path, contract="raw", letterbox_spec=letterbox_spec(cfg), class_names=names,
                           opset=opset)