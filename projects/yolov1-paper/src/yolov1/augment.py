"""Image -> network input, with the paper's augmentation (paper §2.2).

    "For data augmentation we introduce random scaling and translations of up to 20% of the original
     image size. We also randomly adjust the exposure and saturation of the image by up to a factor of
     1.5 in the HSV color space."

Geometry is one affine warp (resize to the square input, scale by s in [0.8, 1.2] about the centre,
shift by up to +-20% of the side) done in a single resample, so augmentation costs one interpolation
like the plain resize. Boxes go through the same map, are clipped to the image, and boxes left narrower
or shorter than ``min_box_px`` are dropped *together with their labels* (the starting code took labels
from before augmentation, misaligning them whenever a box was dropped).

YOLOv1 resizes to 448x448 without keeping the aspect ratio (no letterbox); evaluation maps boxes back
with the inverse per-axis scale.

Exposure/saturation: each factor is drawn in [1, 1.5] and inverted with probability 1/2 (Darknet's
``rand_scale``), applied to V and S in HSV.

Pixels are normalised with the ImageNet mean/std in both pretraining and detection: the backbone must
see the same input statistics in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_MEAN255 = np.array(MEAN, np.float32) * 255
_STD255 = np.array(STD, np.float32) * 255
FILL = tuple(int(round(255 * m)) for m in MEAN)  # border pixels: the mean, i.e. 0 after normalising


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> normalised float32 ``(3, H, W)``.

    Normalised in numpy on the HWC array, then transposed once: the same ops on a permuted torch view
    run ~20x slower in a busy data-loader process (strided, multi-threaded elementwise kernels).
    """
    a = (np.asarray(img, dtype=np.float32) - _MEAN255) / _STD255
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``to_tensor``'s normalisation, to [0, 1] (for plots)."""
    return (x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)).clamp(0, 1)


def rand_scale(rng: np.random.Generator, factor: float) -> float:
    """A factor in [1, factor], inverted half the time (symmetric in log space)."""
    s = rng.uniform(1.0, factor)
    return s if rng.random() < 0.5 else 1.0 / s


def adjust_hsv(img: Image.Image, saturation: float, exposure: float) -> Image.Image:
    """Multiplies HSV saturation and value by the given factors (clipped to 255)."""
    if saturation == 1.0 and exposure == 1.0:
        return img
    hsv = np.asarray(img.convert("HSV"), dtype=np.float32).copy()
    hsv[..., 1] *= saturation
    hsv[..., 2] *= exposure
    return Image.fromarray(np.clip(hsv, 0, 255).astype(np.uint8), mode="HSV").convert("RGB")


@dataclass
class DetectionTransform:
    """Resize (+ augment) an image and its boxes to the square network input.

    Args:
        size: output side (448 in the paper).
        train: apply the random scale/translate/HSV augmentation.
        scale, translate: max relative scale change and shift (0.2 = 20%, the paper's).
        saturation, exposure: max HSV factors (1.5 = the paper's).
        hflip: horizontal flip with p=0.5 (not in the paper; Darknet does it). Off by default.
        min_box_px: boxes smaller than this on either side after augmentation are dropped.
    """

    size: int = 448
    train: bool = False
    scale: float = 0.2
    translate: float = 0.2
    saturation: float = 1.5
    exposure: float = 1.5
    hflip: bool = False
    min_box_px: float = 2.0

    def sample(self, rng: np.random.Generator | None = None) -> dict:
        """Random parameters for one image (the identity when ``train`` is off)."""
        if not self.train:
            return {"s": 1.0, "tx": 0.0, "ty": 0.0, "flip": False, "saturation": 1.0, "exposure": 1.0}
        rng = rng if rng is not None else np.random.default_rng()
        tx, ty = rng.uniform(-self.translate, self.translate, 2) * self.size
        return {"s": float(rng.uniform(1 - self.scale, 1 + self.scale)), "tx": float(tx), "ty": float(ty),
                "flip": bool(self.hflip and rng.random() < 0.5),
                "saturation": rand_scale(rng, self.saturation), "exposure": rand_scale(rng, self.exposure)}

    def __call__(self, img: Image.Image, boxes: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator | None = None) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Returns ``(image (3, size, size), boxes (n, 4) normalised cx cy w h, labels (n,))``.

        ``boxes`` come in as pixel xyxy of ``img``; the labels returned are those of the boxes kept.
        """
        return self.apply(img, boxes, labels, self.sample(rng))

    def apply(self, img: Image.Image, boxes: np.ndarray, labels: np.ndarray,
              params: dict) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """``__call__`` with explicit parameters (``sample``'s dict): scale ``s``, shift ``tx``/``ty`` in
        output pixels, ``flip``, ``saturation`` and ``exposure`` factors."""
        W, H = img.size
        out = self.size
        s, tx, ty = params["s"], params["tx"], params["ty"]
        sx, sy = out / W * s, out / H * s
        # Forward map: u = sx * x + ox, v = sy * y + oy (scale about the output centre, then shift).
        ox = out / 2 * (1 - s) + tx
        oy = out / 2 * (1 - s) + ty
        if s == 1.0 and tx == 0.0 and ty == 0.0:
            warped = img.resize((out, out), Image.BILINEAR)
        else:
            # PIL wants the inverse map: x = (u - ox) / sx.
            warped = img.transform((out, out), Image.AFFINE, (1 / sx, 0, -ox / sx, 0, 1 / sy, -oy / sy),
                                   resample=Image.BILINEAR, fillcolor=FILL)
        b = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        labels = np.asarray(labels, np.int64).reshape(-1)
        b[:, [0, 2]] = b[:, [0, 2]] * sx + ox
        b[:, [1, 3]] = b[:, [1, 3]] * sy + oy
        b = np.clip(b, 0, out)
        keep = ((b[:, 2] - b[:, 0]) >= self.min_box_px) & ((b[:, 3] - b[:, 1]) >= self.min_box_px)
        b, labels = b[keep], labels[keep]  # one mask for both: boxes and labels stay aligned
        if params["flip"]:
            warped = warped.transpose(Image.FLIP_LEFT_RIGHT)
            b[:, [0, 2]] = out - b[:, [2, 0]]
        warped = adjust_hsv(warped, params["saturation"], params["exposure"])
        cxcywh = np.stack(((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]),
                          axis=1) / out if len(b) else np.zeros((0, 4), np.float32)
        return to_tensor(warped), cxcywh.astype(np.float32), labels
