"""``DetectModelBase``: builds a detector from a layer spec (``parse_model``) and runs its graph.

A custom model subclasses it with its own spec; ``core.runtime.attach_runtime`` then finds the Detect head
and fills the runtime fields (strides, decoder, postprocessor). The layers live in ``self.model`` (an
``nn.Sequential``) so state-dict names are ``model.<i>.…`` as in the published checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import SPPF, C2f, Concat, Conv, MANet, make_divisible
from .head import Detect
from .hypergraph import HyperComputeModule
from .spec import SCALES, Scale, spec_for

_CHANNEL_MODULES = (Conv, C2f, SPPF, MANet)   # first arg = output channels, scaled by width
_REPEAT_MODULES = (C2f, MANet)                # repeats go inside the module (its n), not nn.Sequential


class DetectModelBase(nn.Module):
    """A spec-built detector. Forward: images [B,3,H,W] -> per-level Detect maps (train and eval alike)."""

    def __init__(self, spec: tuple, scale: Scale, nc: int = 80, ch: int = 3, reg_max: int = 16,
                 hyper_threshold: float | None = None, hyper_distance: str = "euclidean"):
        super().__init__()
        self.nc = nc
        self.reg_max = reg_max
        self.scale = scale
        self.model, self.save = self.parse_model(spec, scale, nc=nc, ch=ch, reg_max=reg_max,
                                                 hyper_threshold=hyper_threshold, hyper_distance=hyper_distance)
        # Runtime fields, set by core.runtime.attach_runtime (one source of truth).
        self.strides: tuple[int, ...] = ()
        self.detect_layer: int = len(self.model) - 1
        self.decoder = None
        self.postprocessor = None

    @staticmethod
    def parse_model(spec: tuple, scale: Scale, *, nc: int, ch: int = 3, reg_max: int = 16,
                    hyper_threshold: float | None = None,
                    hyper_distance: str = "euclidean") -> tuple[nn.Sequential, list[int]]:
        """Spec -> (nn.Sequential of layers, sorted indices whose outputs later layers read)."""
        chs = [ch]
        layers, save = [], []
        for i, (f, n, module, args) in enumerate(spec):
            args = [nc if a == "nc" else a for a in args]
            n = max(round(n * scale.depth), 1) if n > 1 else n
            if module in _CHANNEL_MODULES:
                c1, c2 = chs[f], make_divisible(min(args[0], scale.max_channels) * scale.width, 8)
                args = [c1, c2, *args[1:]]
                if module in _REPEAT_MODULES:
                    args.insert(2, n)
                    n = 1
            elif module is Concat:
                c2 = sum(chs[x] for x in f)
            elif module is HyperComputeModule:
                c1 = chs[f]
                c2 = make_divisible(min(args[0], scale.max_channels) * scale.width, 8)
                threshold = scale.threshold if hyper_threshold is None else hyper_threshold
                args = [c1, c2, threshold, hyper_distance]
            elif module is Detect:
                args = [args[0], tuple(chs[x] for x in f), reg_max]
                c2 = None
            else:  # pooling / upsampling keep the channel count
                c2 = chs[f]
            layer = nn.Sequential(*(module(*args) for _ in range(n))) if n > 1 else module(*args)
            layer.i, layer.f = i, f
            save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
            layers.append(layer)
            if i == 0:
                chs = []
            chs.append(c2)
        return nn.Sequential(*layers), sorted(set(save))

    @property
    def detect(self) -> Detect:
        return self.model[self.detect_layer]

    def hyper_modules(self) -> list[HyperComputeModule]:
        return [m for m in self.modules() if isinstance(m, HyperComputeModule)]

    def mean_hyperedge_size(self) -> float | None:
        """Mean hyperedge size (vertices per edge) of the last forward, over every HyperComputeModule."""
        sizes = [m.last_edge_size for m in self.hyper_modules() if m.last_edge_size is not None]
        return float(torch.stack(sizes).mean()) if sizes else None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[torch.Tensor | None] = []
        for layer in self.model:
            if layer.f != -1:
                x = outputs[layer.f] if isinstance(layer.f, int) else [x if j == -1 else outputs[j] for j in layer.f]
            x = layer(x)
            outputs.append(x if layer.i in self.save else None)
        return x


class HyperYOLO(DetectModelBase):
    """Hyper-YOLO at one scale (``n s m l x``, or ``t`` = hyper-yolot)."""

    def __init__(self, scale: str = "n", nc: int = 80, ch: int = 3, reg_max: int = 16,
                 hyper_threshold: float | None = None, hyper_distance: str = "euclidean"):
        super().__init__(spec_for(scale), SCALES[scale], nc=nc, ch=ch, reg_max=reg_max,
                         hyper_threshold=hyper_threshold, hyper_distance=hyper_distance)
        self.scale_name = scale


def build_model(cfg: dict) -> DetectModelBase:
    """The detector a config asks for (``model`` = "hyper", the only family so far)."""
    if cfg["model"] != "hyper":
        raise ValueError(f"unknown --model {cfg['model']!r}; available: hyper")
    return HyperYOLO(cfg["model_scale"], nc=cfg["nc"], reg_max=cfg["reg_max"], hyper_threshold=cfg["hyper_threshold"],
                     hyper_distance=cfg["hyper_distance"])
