"""YOLOX on Gaudi HPUs, CUDA and CPU."""
