"""The HyperComputeModule: one hypergraph convolution over the stride-16 feature map.

Semantics of the published module (iMoonLab/Hyper-YOLO ``block.py``): the H*W pixels are vertices; every
vertex spans one hyperedge holding all vertices closer than ``threshold`` (Euclidean, in feature space, an
epsilon-ball, so the incidence H is symmetric with a unit diagonal). Then X' = fc(X), E = mean of X' over
each hyperedge (v->e), V = mean of E over the hyperedges of each vertex (e->v), out = SiLU(BN(V + X)).

Two choices made here:
- Distances are squared and computed as |x|^2 + |y|^2 - 2 x y^T (one matmul) instead of ``torch.cdist``:
  same incidence (a test compares the masks), exports to ONNX and runs in ONNX Runtime (cdist's ONNX
  export breaks onnxruntime-gpu 1.17, Hyper-YOLO issue #5). Cost: O(N^2) memory, N = H*W, as cdist:
  10 MB per image at 640 (N = 1600), 164 MB at 1280.
- The threshold is absolute (the published default, 6/8/10/10/12 by scale). Distances grow like sqrt(C),
  so a hypergraph can degenerate to one vertex per edge; ``last_edge_size`` keeps the mean hyperedge size
  of the last forward (a detached scalar) so the trainer logs it. ``distance: "normalized"`` divides the
  distance by sqrt(C) instead (scale-free thresholds; not the published model).
The incidence is not differentiable: gradients flow through ``fc`` and the two averages only.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BN_EPS, BN_MOMENTUM


def pairwise_sq_dist(x: torch.Tensor) -> torch.Tensor:
    """[B, N, C] -> [B, N, N] squared Euclidean distances via |x|^2 + |y|^2 - 2xy^T, clamped at 0.

    Computed in fp32 even under autocast: in fp16 the cancellation in the subtraction moves pairs across
    the threshold.
    """
    x = x.float()
    sq = (x * x).sum(-1)
    d2 = sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * torch.bmm(x, x.transpose(1, 2))
    return d2.clamp_min(0.0)


class MessageAgg(nn.Module):
    """Mean aggregation along a 0/1 incidence matrix: out = (P @ X) / rowsum(P).

    A row sum is 0 (an empty row, whose product is 0 too) or >= 1, so clamping it at 1 gives the published
    "1/0 -> 0" rule without an inf/isinf pass (and exports to plain ONNX ops).
    """

    def forward(self, x: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
        return torch.matmul(path, x) / path.sum(dim=2, keepdim=True).clamp_min(1.0)


class HyPConv(nn.Module):
    """Hypergraph convolution: fc, then vertex -> hyperedge mean, then hyperedge -> vertex mean."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.fc = nn.Linear(c1, c2)
        self.v2e = MessageAgg()
        self.e2v = MessageAgg()

    def forward(self, x: torch.Tensor, incidence: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        edges = self.v2e(x, incidence.transpose(1, 2))
        return self.e2v(edges, incidence)


class HyperComputeModule(nn.Module):
    """Hypergraph computation at one level: epsilon-ball hypergraph + HyPConv + residual + BN + SiLU."""

    def __init__(self, c1: int, c2: int, threshold: float, distance: str = "euclidean"):
        super().__init__()
        if c1 != c2:
            raise ValueError(f"HyperComputeModule needs c1 == c2 for its residual, got {c1} and {c2}")
        if distance not in ("euclidean", "normalized"):
            raise ValueError(f"hyper distance must be 'euclidean' or 'normalized', got {distance!r}")
        self.threshold = float(threshold)
        self.distance = distance
        self.hgconv = HyPConv(c1, c2)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU()
        self.last_edge_size: torch.Tensor | None = None

    def incidence(self, vertices: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, N, N] 0/1 incidence (dtype of the vertices): distance < threshold."""
        d2 = pairwise_sq_dist(vertices)
        if self.distance == "normalized":
            d2 = d2 / vertices.shape[-1]
        return (d2 < self.threshold ** 2).to(vertices.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        v = x.flatten(2).transpose(1, 2)  # [B, N, C]
        hg = self.incidence(v)
        self.last_edge_size = hg.detach().sum(-1).float().mean()
        v = self.hgconv(v, hg).to(v.dtype) + v
        return self.act(self.bn(v.transpose(1, 2).reshape(b, c, h, w)))
