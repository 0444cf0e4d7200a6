"""``python -m yolox_gaudi.export``: a checkpoint -> ONNX for ``yolo_common``'s evaluator (``raw`` contract).

    python -m yolox_gaudi.export -n yolox-s -c runs/yolox-s/checkpoints/best.pt -o yolox_s.onnx
    python -m yolox_gaudi.export -n yolox-s -c yolox_s.pth -o yolox_s.onnx --tsize 640     # official weights

The graph decodes as Megvii's ``decode_in_inference`` does (grid offsets and strides, ``exp`` of the
sizes; constant grids for the fixed input size) and ends in the ``raw`` contract: ``[N, 4 + nc, A]``,
per anchor ``cx, cy, w, h`` in letterboxed pixels and ``obj x cls`` per class. Batch is dynamic, the
spatial size is ``test_size`` (h, w). The file carries ``yolo_common`` metadata: the YOLOX letterbox
(top-left, BGR, 0-255, pad 114) at that size, the class names, and YOLOX's own evaluation settings
(one class per anchor, conf ``test_conf``, NMS ``nmsthre``, ``max_dets``), so ``evaluate_onnx`` scores it
exactly as ``yolox_gaudi.eval`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

OPSET = 17


class RawContract(nn.Module):
    """A YOLOX in inference mode, reshaped to the ``raw`` contract (obj x cls scores)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)                                     # [N, A, 5 + nc]: cxcywh, obj, cls (sigmoids)
        return torch.cat((out[..., :4], out[..., 4:5] * out[..., 5:]), -1).transpose(1, 2)


def export_onnx(model: nn.Module, exp, path: str | Path, class_names, *, opset: int = OPSET) -> Path:
    """Writes ``path`` (dynamic batch, ``exp.test_size`` input) with the evaluator metadata."""
    from yolo_common.onnx_eval import export_detector
    from yolo_common.preprocess import YOLOX

    h, w = (int(v) for v in exp.test_size)
    return export_detector(RawContract(model), torch.zeros(1, 3, h, w), path, contract="raw",
                           letterbox_spec=YOLOX.with_size((h, w)), class_names=class_names, opset=opset,
                           decode={"conf": float(exp.test_conf), "iou": float(exp.nmsthre),
                                   "max_det": int(exp.max_dets), "multi_label": False})


def main(argv=None) -> int:
    from .eval import _size

    p = argparse.ArgumentParser(prog="python -m yolox_gaudi.export", description=__doc__.splitlines()[0])
    p.add_argument("-n", "--name", default="yolox-s")
    p.add_argument("-f", "--exp_file", default=None)
    p.add_argument("-c", "--ckpt", required=True, help="a run's checkpoint (EMA weights) or Megvii .pth")
    p.add_argument("-o", "--output", required=True, help=".onnx path")
    p.add_argument("--tsize", type=_size, default=None, help="input size S or H,W (default: the config's)")
    p.add_argument("--opset", type=int, default=OPSET)
    p.add_argument("--names", default=None, help="class names file (default: the checkpoint's, COCO's for 80)")
    args = p.parse_args(argv)
    from yolo_common.checkpoint import load_checkpoint

    from .config import get_exp, load_exp_file
    from .demo import class_names
    from .model import build_from_checkpoint

    try:
        exp = load_exp_file(args.exp_file) if args.exp_file else get_exp(args.name)
        ck = load_checkpoint(args.ckpt)
        model = build_from_checkpoint(exp, ck, args.ckpt, use_checkpoint_exp=not args.exp_file,
                                      extra=("test_size", "test_conf", "nmsthre", "max_dets"))
        if args.tsize is not None:
            exp.test_size = args.tsize
        names = class_names(ck, exp.num_classes, args.names)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = export_onnx(model, exp, args.output, names, opset=args.opset)
    print(f"[yolox_gaudi.export] {path} ({path.stat().st_size / 1e6:.1f} MB, input {exp.test_size}, raw contract)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
