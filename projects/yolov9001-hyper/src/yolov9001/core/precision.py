"""``precision: auto`` -> bf16 on CUDA when supported (else fp16 with a GradScaler), fp32 elsewhere."""

from __future__ import annotations

import torch


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"
