"""Hyper-YOLO model family: blocks, hypergraph module, Detect head, layer specs, spec-built detector."""

from .detect_model import DetectModelBase, HyperYOLO, build_model
from .head import DFL, Detect
from .hypergraph import HyperComputeModule

__all__ = ["DFL", "Detect", "DetectModelBase", "HyperComputeModule", "HyperYOLO", "build_model"]
