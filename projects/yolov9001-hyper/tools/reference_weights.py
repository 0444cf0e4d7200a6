"""Deterministic weights and inputs shared by the reference recorder and the parity test.

The parity check loads the *same numbers* into the original Hyper-YOLO (iMoonLab fork) and into this
project's model without shipping a 16-224 MB checkpoint: every state-dict entry is regenerated from its
own name (a CRC32 seed), so two models whose state-dict names and shapes agree get identical weights.
Only the outputs are recorded (tests/data/hyperyolo_reference.npz, by tools/record_hyperyolo_reference.py).
"""

from __future__ import annotations

import math
import zlib

import torch


def deterministic_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Same keys and shapes, values drawn from a generator seeded by each key's CRC32.

    BN statistics and scales are kept in a healthy range (var in [0.75, 1.25], gamma ~ 1) so activations
    neither explode nor vanish over 30 layers; the DFL projection (fixed arange) and integer buffers
    (``num_batches_tracked``) are kept as they are.
    """
    out = {}
    for key, value in state_dict.items():
        if not value.is_floating_point() or ".dfl." in key:
            out[key] = value.clone()
            continue
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        shape = value.shape
        if key.endswith("running_var"):
            new = torch.rand(shape, generator=g) * 0.5 + 0.75
        elif key.endswith("running_mean"):
            new = torch.randn(shape, generator=g) * 0.1
        elif value.ndim == 1 and key.endswith(".weight"):  # BN gamma
            new = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif value.ndim == 1:  # biases, BN beta
            new = 0.1 * torch.randn(shape, generator=g)
        else:  # conv / linear weights: unit-variance outputs
            new = torch.randn(shape, generator=g) / math.sqrt(value[0].numel())
        out[key] = new.to(value.dtype)
    return out


def reference_input(batch: int = 1, size: int = 160, seed: int = 0) -> torch.Tensor:
    """A smooth image-like batch in [0, 1] (blurred noise), so features are not pure white noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.rand(batch, 3, size, size, generator=g)).clamp(0, 1)
