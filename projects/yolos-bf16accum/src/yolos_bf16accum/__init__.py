"""YOLOS-tiny with bf16-accumulating matmuls."""
