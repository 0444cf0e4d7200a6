"""``python -m yolov1.export``: a detection checkpoint -> ONNX for ``yolo_common``'s evaluator (``raw``).

    python -m yolov1.export runs/detect_voc -o yolov1.onnx
    python -m yolov1.export runs/smoke/detect --out-dir runs/smoke/detect/export      # name from the run

The graph ends where :func:`yolov1.postprocess.decode` starts its loop: the ``S x S x (5B + C)`` output is
decoded to ``S*S*B`` boxes (``cx = (col + x) / S``, ``w = max(sqrt_w, 0)^2``, clipped to the image as
``decode`` clips them) in input pixels, each with the paper's class-specific scores ``conf x Pr(class)``
for every class (a box may count for several classes, as in Darknet): ``[N, 4 + C, S*S*B]``, the ``raw``
contract. A box that clipping leaves with no width or height gets score -inf (``decode`` drops it). The
metadata describes the input exactly as training and evaluation make it (a stretch resize to ``64 S``
square, no letterbox: ``keep_ratio=False``; RGB, ImageNet mean/std) and the checkpoint's own decode
settings (conf, per-class NMS IoU, max detections, multi-label), so ``evaluate_onnx`` scores it as
``yolov1.evaluate`` does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

OPSET = 17


class RawContract(nn.Module):
    """The detector + the paper's test-time scoring, shaped ``[N, 4 + C, S*S*B]`` (pixels of the input)."""

    def __init__(self, model: nn.Module, B: int, size: int):
        super().__init__()
        self.model, self.B, self.size = model, int(B), int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .boxes import cxcywh_to_xyxy, decode_boxes

        pred = self.model(x).float()
        n, s = pred.shape[0], pred.shape[1]
        B = self.B
        c = pred.shape[-1] - 5 * B
        xyxy = cxcywh_to_xyxy(decode_boxes(pred, B)).clamp(0, 1).reshape(n, s * s * B, 4) * self.size
        ok = (xyxy[..., 2] > xyxy[..., 0]) & (xyxy[..., 3] > xyxy[..., 1])
        conf = pred[..., : 5 * B].reshape(n, s, s, B, 5)[..., 4]
        probs = pred[..., 5 * B:]
        scores = (conf[..., None] * probs[..., None, :]).reshape(n, s * s * B, c)
        # decode() drops boxes that clipping left empty: -inf keeps them out at any threshold
        scores = scores.masked_fill(~ok[..., None], float("-inf"))
        cxcywh = torch.cat(((xyxy[..., :2] + xyxy[..., 2:]) / 2, xyxy[..., 2:] - xyxy[..., :2]), -1)
        return torch.cat((cxcywh, scores), -1).transpose(1, 2)


def input_spec(S: int):
    """The evaluator's description of the network input: stretched to ``64 S`` square, ImageNet-normalised."""
    from yolo_common.preprocess import LetterboxSpec

    from .augment import MEAN, STD

    return LetterboxSpec(size=64 * int(S), keep_ratio=False, rgb=True, scale=1 / 255, mean=MEAN, std=STD)


def export_onnx(model: nn.Module, meta: dict, path: str | Path, *, opset: int = OPSET) -> Path:
    """Writes ``path`` (dynamic batch) with the evaluator metadata from the checkpoint's ``meta``."""
    from yolo_common.onnx_eval import export_detector

    cfg = meta["config"]
    S, B = int(cfg["S"]), int(cfg["B"])
    size = 64 * S
    return export_detector(RawContract(model.eval(), B, size), torch.zeros(1, 3, size, size), path, contract="raw",
                           letterbox_spec=input_spec(S), class_names=meta["classes"], opset=opset,
                           decode={"conf": float(cfg.get("conf_threshold", 0.005)),
                                   "iou": float(cfg.get("nms_iou", 0.5)),
                                   "max_det": int(cfg.get("max_detections", 100)), "multi_label": True})


def main(argv: Sequence[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="checkpoint folder (epoch_NNNN) or run folder (its newest checkpoint)")
    ap.add_argument("-o", "--output", default=None, help=".onnx path (default: <out-dir>/yolov1-S<S>.onnx)")
    ap.add_argument("--out-dir", default=None, help="folder for the default name (default: the checkpoint's)")
    ap.add_argument("--opset", type=int, default=OPSET)
    a = ap.parse_args(argv)
    from .evaluate import load_detector

    try:
        model, meta = load_detector(a.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(a.output) if a.output else Path(a.out_dir or meta["folder"]) / f"yolov1-S{meta['config']['S']}.onnx"
    path = export_onnx(model, meta, out, opset=a.opset)
    print(f"[yolov1.export] {path} ({path.stat().st_size / 1e6:.1f} MB, raw contract, input {64 * int(meta['config']['S'])})")
    return path


if __name__ == "__main__":
    main()
