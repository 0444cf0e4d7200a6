"""yolov9001: a from-scratch Hyper-YOLO training platform (train | val | detect | benchmark | export)."""

__version__ = "0.1.0"
