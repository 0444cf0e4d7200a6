"""Batch augmentation ops as plain torch tensor code: they run on whatever device the tensors are on (CUDA in
training, the CPU in tests) and mirror the CPU ops of ``augment`` on whole batches.

Conventions (the same as ``augment``): boxes are xyxy in continuous pixel coordinates (pixel i spans
[i, i+1)); a per-sample 3x3 matrix maps source coordinates to output coordinates. Box maths runs in float64
(a few thousand numbers per batch), so a box kept or dropped at a threshold agrees with the numpy ops; pixels
are resampled in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def warp_boxes(boxes: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """boxes [n, 4] and one matrix per box [n, 3, 3] -> the axis-aligned hull of the four warped corners."""
    if not len(boxes):
        return boxes.reshape(0, 4)
    b = boxes.double()
    x1, y1, x2, y2 = b.unbind(1)
    # corners in the order of augment.warp_boxes: (x1,y1) (x2,y2) (x1,y2) (x2,y1)
    xs = torch.stack((x1, x2, x1, x2), 1)
    ys = torch.stack((y1, y2, y2, y1), 1)
    pts = torch.stack((xs, ys, torch.ones_like(xs)), 2)            # [n, 4, 3]
    w = pts @ m.double().transpose(1, 2)                           # [n, 4, 3]
    px, py = w[..., 0] / w[..., 2], w[..., 1] / w[..., 2]
    return torch.stack((px.amin(1), py.amin(1), px.amax(1), py.amax(1)), 1)


def filter_boxes(boxes: torch.Tensor, width: int, height: int, min_visible_frac: float,
                 min_box_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``augment.filter_boxes`` on a tensor: (clipped boxes, keep mask). Keep: visible / full area >=
    ``min_visible_frac``, both clipped sides >= ``min_box_size``, a non-empty box."""
    def area(b):
        return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)

    full = area(boxes)
    clipped = torch.stack((boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                           boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)), 1)
    vis = area(clipped) / full.clamp(min=1e-9)
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (vis >= min_visible_frac) & (w >= min_box_size) & (h >= min_box_size) & (full > 0)
    return clipped, keep


def warp_images(src: torch.Tensor, m: torch.Tensor, size: int, pad_value: float) -> torch.Tensor:
    """Float images [B, C, H, W] -> [B, C, size, size] through per-sample matrices [B, 3, 3] (source ->
    output; affine or perspective), bilinear; whatever falls outside the source reads ``pad_value``
    (OpenCV's constant border).

    Each output pixel centre (x + .5, y + .5) is mapped back by m^-1 and sampled with ``grid_sample``
    (``align_corners=False``: grid -1..1 spans the source's outer pixel edges, the continuous convention).
    ``m`` should live on the host: the 3x3 inverses and normalisations are computed there in float64 and only
    [B, 2, 3] thetas (affine, through ``affine_grid``: one [B, size, size, 2] grid) or [B, 3, 3] inverses
    (perspective, one grid built here) go to the device, so nothing waits for it. ``src`` is used as scratch
    (modified in place): one less full-batch temporary.
    """
    b, _, h, w = src.shape
    dev = src.device
    m = m.detach().to("cpu", torch.float64)
    inv = torch.linalg.inv(m)
    # continuous pixel coordinates -> align_corners=False normalised coordinates, for the source and output
    n_src = torch.tensor([[2.0 / w, 0, -1], [0, 2.0 / h, -1], [0, 0, 1]], dtype=torch.float64)
    n_out_inv = torch.tensor([[size / 2.0, 0, size / 2.0], [0, size / 2.0, size / 2.0], [0, 0, 1]],
                             dtype=torch.float64)
    if bool((m[:, 2, :2] == 0).all()):
        theta = (n_src @ inv @ n_out_inv)[:, :2].to(torch.float32)
        grid = F.affine_grid(to_device(theta, dev), [b, src.shape[1], size, size], align_corners=False)
    else:
        inv_n = to_device((n_src @ inv).to(torch.float32), dev)   # continuous output px -> normalised source
        c = torch.arange(size, device=dev, dtype=torch.float32) + 0.5
        gy, gx = torch.meshgrid(c, c, indexing="ij")
        pts = torch.stack((gx, gy, torch.ones_like(gx)), -1).reshape(1, -1, 3)    # [1, P, 3]
        s = pts @ inv_n.transpose(1, 2)                                          # [B, P, 3]
        grid = (s[..., :2] / s[..., 2:3]).reshape(b, size, size, 2)
    # zeros padding on (src - pad) + pad == a constant pad_value border, blended bilinearly at the edges
    out = F.grid_sample(src.sub_(pad_value), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.add_(pad_value)


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A small host tensor -> ``device`` without a stream sync (pinned first on CUDA: a copy from pageable
    memory would wait for the stream)."""
    device = torch.device(device)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, 3, H, W] in [0, 1] -> hue (fraction of the circle, [0, 1)), saturation, value."""
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    mn, _ = x.min(1)
    d = v - mn
    s = torch.where(v > 0, d / v.clamp(min=1e-12), torch.zeros_like(v))
    dz = d.clamp(min=1e-12)
    h = torch.where(v == r, (g - b) / dz, torch.where(v == g, 2 + (b - r) / dz, 4 + (r - g) / dz))
    h = torch.where(d > 0, (h / 6) % 1.0, torch.zeros_like(h))
    return h, s, v


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # the standard piecewise form, written branch-free: channel k = v - v s max(0, min(t, 4 - t, 1)),
    # t = (n_k + 6h) mod 6 with n = 5, 3, 1 for r, g, b
    out = []
    for n in (5.0, 3.0, 1.0):
        t = (n + h * 6) % 6
        out.append(v - v * s * torch.clamp(torch.minimum(t, 4 - t), 0, 1))
    return torch.stack(out, 1)


def hsv_jitter(x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """``augment.hsv_jitter`` on a float batch [B, 3, H, W] in [0, 255]: gains [B, 3] = (hue shift as a
    fraction of the circle, saturation gain, value gain); (0, 1, 1) leaves a sample unchanged.

    OpenCV's version quantises hue to 180 steps and each channel to uint8; this one stays in float, so the
    two differ by the quantisation (about a grey level on average; the test bounds it)."""
    h, s, v = _rgb_to_hsv(x / 255)
    g = to_device(gains.to(torch.float32), x.device)[:, :, None, None]
    h = (h + g[:, 0]) % 1.0
    s = (s * g[:, 1]).clamp(0, 1)
    v = (v * g[:, 2]).clamp(0, 1)
    return _hsv_to_rgb(h, s, v).mul_(255)
