"""ONNX export of a trained YOLOS for ``yolo_common``'s evaluator (the ``set`` contract).

    python -m yolos_bf16accum.export runs/smoke-progressive -o yolos.onnx     # a run folder: its best.pt

The file has two outputs, ``logits [N, Q, C + 1]`` (the last column "no object") and ``pred_boxes [N, Q,
4]`` (normalised cx, cy, w, h of the input), a dynamic batch and the run's fixed ``image_size`` input. Its
metadata describes the preprocessing exactly as this project evaluates (a stretch resize to
``image_size``, no padding: ``keep_ratio=False``; RGB 0-1 with ImageNet mean/std), and the decode (best
class per query after the no-object softmax, the top 100 queries, no threshold: ``engine.postprocess``).

What is exported is the **float** model: bf16-accumulation patches (class-swapped Linears, the
``bf16acc`` attention function) change how a matmul accumulates, not its weights, so the export is a
fresh ``YolosForObjectDetection`` with eager attention carrying the run's weights, and its matmuls are
ordinary ONNX ``MatMul``/``Gemm`` nodes run at the runtime's precision. The ONNX score therefore is the
float model's, which for a progressive run is not the patched model's evaluation.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

OPSET = 17


class SetContract(nn.Module):
    """``pixel_values -> (logits, pred_boxes)``, the two outputs of the ``set`` contract."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor):
        out = self.model(pixel_values=pixel_values)
        return out.logits, out.pred_boxes


def float_model(model: nn.Module) -> nn.Module:
    """A plain copy of a (possibly patched) YOLOS: same weights, eager attention, no class-swapped layers."""
    from transformers import YolosForObjectDetection

    config = copy.deepcopy(model.config)
    config._attn_implementation = "eager"
    plain = YolosForObjectDetection(config)
    plain.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    return plain.eval()


def input_spec(image_size: tuple[int, int]):
    """The evaluator's description of the input: the fixed (h, w) stretch resize, ImageNet-normalised."""
    from yolo_common.preprocess import LetterboxSpec

    from yolos_bf16accum.data import IMAGENET_MEAN, IMAGENET_STD

    return LetterboxSpec(size=tuple(int(v) for v in image_size), keep_ratio=False, rgb=True, scale=1 / 255,
                         mean=IMAGENET_MEAN, std=IMAGENET_STD)


def export_onnx(model: nn.Module, image_size: tuple[int, int], class_names, path: str | Path, *,
                opset: int = OPSET, top_k: int = 100) -> Path:
    """Writes ``path`` from ``model`` (patched or not; see the module docstring) with the evaluator metadata."""
    from yolo_common.onnx_eval import export_detector

    h, w = (int(v) for v in image_size)
    return export_detector(SetContract(float_model(model)), torch.zeros(1, 3, h, w), path, contract="set",
                           letterbox_spec=input_spec((h, w)), class_names=class_names, input_name="pixel_values",
                           output_names=("logits", "pred_boxes"), decode={"conf": 0.0, "max_det": top_k},
                           opset=opset)


def load_run(run: str | Path):
    """``(model, config dict, class names)`` from a run folder (``checkpoints/best.pt``) or a ``.pt``."""
    from transformers import YolosForObjectDetection
    from yolo_common.checkpoint import load_checkpoint

    from yolos_bf16accum.model import tiny_yolos_config

    p = Path(run)
    ck_path = p / "checkpoints" / "best.pt" if p.is_dir() else p
    ck = load_checkpoint(ck_path)
    cfg = ck.get("config", {})
    state = ck["model"]
    names = ck.get("class_names")
    num_labels = state["class_labels_classifier.layers.2.weight"].shape[0] - 1
    if cfg.get("model_config") != "tiny-random":
        raise ValueError(f"{ck_path}: only tiny-random runs rebuild without the hub here; for a hub model "
                         f"export from the live model (export_onnx) at the end of training")
    model = YolosForObjectDetection(tiny_yolos_config(num_labels, tuple(cfg["image_size"])))
    model.load_state_dict(state)
    return model.eval(), cfg, names or [f"class_{i}" for i in range(num_labels)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m yolos_bf16accum.export", description=__doc__.splitlines()[0])
    p.add_argument("run", help="run folder (its checkpoints/best.pt) or a checkpoint file")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--opset", type=int, default=OPSET)
    a = p.parse_args(argv)
    try:
        model, cfg, names = load_run(a.run)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = export_onnx(model, tuple(cfg["image_size"]), names, a.output, opset=a.opset)
    print(f"[yolos_bf16accum.export] {path} (set contract, input {tuple(cfg['image_size'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
