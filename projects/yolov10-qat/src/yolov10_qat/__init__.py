"""yolov10-qat: YOLOv10 from scratch, FP16/AMP baseline vs Brevitas W4A16 QAT, exported to ONNX, one evaluator.

Importing the package loads neither ultralytics nor brevitas nor torch-heavy modules beyond the config; every
function that needs ultralytics contains its import-time side effects first (see ``yolov10_qat._env``).

Modules: ``config`` (RunConfig, presets, recipe), ``data`` (COCO/synthetic -> YOLO layout + provenance),
``quant`` (layer selection, Brevitas swap, strip/restore), ``trainer`` (baseline and QAT trainers, checkpoint
loading), ``export`` (ONNX / QCDQ ONNX), ``report`` (summary.md), ``pipeline`` (the run root and its steps),
``bench`` (training step time W4 vs float), ``cli``.
"""

from .config import RunConfig, full_config, smoke_config

__all__ = ["RunConfig", "full_config", "smoke_config"]
__version__ = "0.1.0"
