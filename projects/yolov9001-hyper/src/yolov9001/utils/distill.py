"""What the DINOv3 teacher adds to the detection loss: anchor priors, saliency centroids, region features,
and the student-side modules the distillation terms train.

Geometry: the student input is the square letterboxed ``imgsz`` canvas and the teacher sees the same canvas
resized to ``resolution``, so a teacher cell (i, j) covers the student pixels ``[(j, i) .. (j+1, i+1)] *
imgsz / Ht``. Anchor priors are the saliency map normalised per image to [0, 1] (divided by its max) and
sampled bilinearly at each anchor centre.

Every function here takes teacher tensors that carry no gradient (the teacher is frozen and runs under
``no_grad``); gradients flow only into the student and :class:`DistillHead`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dino_teacher import DinoOutput


def sample_map(fmap: torch.Tensor, points_px: torch.Tensor, imgsz: int) -> torch.Tensor:
    """Bilinear samples of ``fmap`` [B, C, H, W] (covering an imgsz x imgsz canvas) at ``points_px``
    ([P, 2] shared by the batch, or [B, P, 2]) -> [B, P, C]."""
    b = fmap.shape[0]
    pts = points_px if points_px.dim() == 3 else points_px[None].expand(b, -1, -1)
    grid = (pts.float() / imgsz * 2 - 1)[:, :, None]                     # [B, P, 1, 2] (x, y) in [-1, 1]
    out = F.grid_sample(fmap.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)                                     # [B, P, C]


def anchor_prior(saliency: torch.Tensor, anchor_px: torch.Tensor, imgsz: int) -> torch.Tensor:
    """Saliency [B, Ht, Wt] -> per-anchor prior [B, A] in [0, 1] (1 at each image's most salient cell)."""
    sal = saliency.float()
    sal = sal / sal.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return sample_map(sal[:, None], anchor_px, imgsz)[..., 0].clamp(0, 1)


def saliency_centroids(saliency: torch.Tensor, gt_boxes: torch.Tensor, imgsz: int) -> torch.Tensor:
    """Saliency-weighted centre of the teacher cells whose centres lie inside each GT box.

    saliency [B, Ht, Wt], gt_boxes [B, M, 4] xyxy px -> [B, M, 2] px; a box with no cell inside (or no
    saliency mass) gets its own centre.
    """
    b, h, w = saliency.shape
    ys = (torch.arange(h, device=saliency.device, dtype=torch.float32) + 0.5) * imgsz / h
    xs = (torch.arange(w, device=saliency.device, dtype=torch.float32) + 0.5) * imgsz / w
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    cx, cy = cx.flatten(), cy.flatten()                                     # [T]
    x1, y1, x2, y2 = (gt_boxes[..., k, None] for k in range(4))             # [B, M, 1]
    inside = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2)                 # [B, M, T]
    wgt = saliency.float().flatten(1)[:, None] * inside                     # [B, M, T]
    mass = wgt.sum(-1, keepdim=True)
    cent = torch.stack(((wgt * cx).sum(-1), (wgt * cy).sum(-1)), -1) / mass.clamp_min(1e-12)
    own = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
    return torch.where(mass > 1e-12, cent, own)


def roi_features(fmap: torch.Tensor, boxes: torch.Tensor, batch_idx: torch.Tensor, imgsz: int) -> torch.Tensor:
    """Mean feature of ``fmap`` [B, C, H, W] inside each box ([N, 4] px, image ``batch_idx``) -> [N, C]
    (torchvision ``roi_align`` to 2x2, averaged; boxes smaller than a cell still get a bilinear sample)."""
    from torchvision.ops import roi_align

    # fp32 throughout: box coordinates in a bf16 map's dtype would lose whole pixels (517 -> 516)
    rois = torch.cat((batch_idx[:, None].float(), boxes.float()), 1)
    pooled = roi_align(fmap.float(), rois, output_size=2, spatial_scale=fmap.shape[-1] / imgsz, sampling_ratio=2,
                       aligned=True)
    return pooled.mean((2, 3))


class DistillHead(nn.Module):
    """Student-side parts of the distillation, trained with the model but never exported.

    ``feat_proj``: 1x1 conv from the student's stride-16 map to the teacher's width (feature distillation);
    ``region_proj``: linear map of student GT-box features into the teacher space (region contrast);
    ``protos`` / ``proto_count``: running mean of the teacher's GT-box features per class (class prototypes,
    a buffer: saved with the head, no gradient).
    """

    def __init__(self, c_student: int, c_teacher: int, nc: int, *, feat: bool, contrast: bool):
        super().__init__()
        self.feat_proj = nn.Conv2d(c_student, c_teacher, 1) if feat else None
        self.region_proj = nn.Linear(c_student, c_teacher) if contrast else None
        self.register_buffer("protos", torch.zeros(nc, c_teacher))
        self.register_buffer("proto_count", torch.zeros(nc))

    @torch.no_grad()
    def update_protos(self, feats: torch.Tensor, labels: torch.Tensor, momentum: float) -> None:
        """EMA of L2-normalised teacher features per class (the first batch of a class initialises it).

        Under DDP the per-class sums and counts are summed over ranks first, so every rank keeps the same
        prototypes (each rank only sees its own GTs). No per-class Python loop: one index_add_.
        """
        import torch.distributed as dist

        feats = F.normalize(feats.float(), dim=-1)
        sums = torch.zeros_like(self.protos).index_add_(0, labels, feats)
        counts = torch.zeros_like(self.proto_count).index_add_(0, labels, torch.ones_like(labels, dtype=feats.dtype))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        seen = counts > 0
        mean = sums / counts.clamp_min(1)[:, None]
        first = seen & (self.proto_count == 0)
        later = seen & ~first
        self.protos[first] = mean[first]
        self.protos[later] = momentum * self.protos[later] + (1 - momentum) * mean[later]
        self.proto_count += counts


@dataclass
class DinoBatch:
    """Everything the loss needs from the teacher for one batch."""

    out: DinoOutput                     # teacher outputs (no grad)
    student_map: torch.Tensor | None    # the student's stride-16 map [B, Cs, H/16, W/16] (with grad)
    head: DistillHead | None
    imgsz: int


def contrast_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE: each student region should match its own teacher region among all regions of the batch."""
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    logits = s @ t.T / temperature
    return F.cross_entropy(logits, torch.arange(len(s), device=s.device))


def feature_loss(student_map: torch.Tensor, head: DistillHead, teacher_map: torch.Tensor) -> torch.Tensor:
    """1 - cosine(projected student stride-16 features, teacher patches resized to the same grid), mean."""
    proj = head.feat_proj(student_map.float())   # the head is fp32; the map may be a bf16/fp16 autocast output
    t = teacher_map.float()
    if t.shape[-2:] != proj.shape[-2:]:
        t = F.interpolate(t, size=proj.shape[-2:], mode="bilinear", align_corners=False)
    return (1 - F.cosine_similarity(proj.float(), t, dim=1)).mean()
