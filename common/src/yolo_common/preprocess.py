"""The letterbox every project trains and evaluates with.

One function, one definition, so that a model trained by one project and evaluated by another sees
pixels and box coordinates computed the same way. Given an ``H x W`` RGB uint8 image and a
:class:`LetterboxSpec` with target size ``S`` (square, ``S x S``; or ``(S_h, S_w)``, written ``S``
below for whichever side the step concerns):

1. **Ratio.** ``r = min(S_h / H, S_w / W)`` (images smaller than ``S`` are scaled *up*, as Ultralytics
   does at validation time).
2. **Resize.** New size ``new_w = max(1, round(W * r))``, ``new_h = max(1, round(H * r))`` (Python
   ``round``, half to even). Resampling is **PIL bilinear** (``Image.resize(..., Image.BILINEAR)``).
   Note that PIL's bilinear filter widens its support when shrinking (it antialiases), unlike
   ``cv2.INTER_LINEAR``; pixel values therefore differ from an OpenCV letterbox by a few levels on
   downscaled images while every coordinate below is identical. When ``new_w == W and new_h == H``
   no resampling happens at all.
3. **Pad** to ``S_h x S_w`` with ``pad_value`` (pre-scaling pixel units, all channels). With
   ``center=True`` the horizontal deficit ``dw = S - new_w`` is split as ``pad_x = dw // 2`` on the
   left and ``dw - dw // 2`` on the right (the odd pixel goes right/bottom, same as Ultralytics'
   ``round(d/2 -/+ 0.1)``), and likewise ``pad_y = dh // 2`` on top. With ``center=False`` the image
   sits in the top-left corner (``pad_x = pad_y = 0``), the YOLOX convention.
4. **Channels.** ``rgb=True`` keeps RGB order, ``rgb=False`` flips to BGR (models trained on
   ``cv2.imread`` output, e.g. YOLOX).
5. **Values.** ``x = pixel * scale``, then if ``mean``/``std`` are given ``x = (x - mean) / std`` per
   output channel (in the output channel order, in scaled units).
6. **Layout.** float32, ``CHW``.

``keep_ratio=False`` is a plain resize instead (YOLOv1 stretches the image to ``S x S``): ``new = S``,
no padding, and the two axes get their own factors (``ratio = S_w / W``, ``ratio_y = S_h / H``).

Box mapping uses the same ``r`` for both axes (not ``new_w / W``), so forward and back are exact
inverses: ``x' = x * r + pad_x`` and ``x = (x' - pad_x) / r``, then clipped to the original image.

Presets: :data:`ULTRALYTICS` (centred, RGB, 0-1, pad 114) and :data:`YOLOX` (top-left, BGR, 0-255,
pad 114). A spec round-trips through ``to_dict``/``from_dict`` so exporters can store it in ONNX
metadata (see ``yolo_common.onnx_eval.write_model_metadata``).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class LetterboxSpec:
    """How to turn an image into a model input. See the module docstring for the exact recipe.

    Attributes:
        size: target side ``S`` in pixels (square), or ``(height, width)`` for a non-square input
            (YOLOX's ``input_size 96,128``). A pair with equal sides is stored as the int, so square
            specs compare equal and serialise as before.
        pad_value: fill for the padded area, in 0-255 pixel units before scaling.
        center: centre the image (Ultralytics) or put it top-left (YOLOX).
        rgb: output channel order RGB (True) or BGR (False).
        scale: multiplier applied to the 0-255 pixel values (``1/255`` or ``1.0``).
        mean, std: optional per-channel normalisation after scaling, in output channel order.
        stride: optional model stride; when set, ``size`` must be a multiple of it (checked here,
            once, rather than as a shape error deep inside the model).
        keep_ratio: letterbox (True) or stretch to the target size (False, YOLOv1's resize).
    """

    size: int | tuple[int, int] = 640
    pad_value: int = 114
    center: bool = True
    rgb: bool = True
    scale: float = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    stride: int | None = None
    keep_ratio: bool = True

    def __post_init__(self) -> None:
        # Lists (e.g. from JSON) become tuples so the frozen spec stays hashable and comparable.
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None:
                v = tuple(float(x) for x in np.atleast_1d(v))
                if len(v) not in (1, 3):
                    raise ValueError(f"LetterboxSpec.{name} must have 1 or 3 values, got {v}")
                object.__setattr__(self, name, v)
        size = self.size
        if isinstance(size, (list, tuple, np.ndarray)):
            if len(size) != 2:
                raise ValueError(f"LetterboxSpec.size must be an int or (height, width), got {size}")
            h, w = (int(v) for v in size)
            object.__setattr__(self, "size", h if h == w else (h, w))
        else:
            object.__setattr__(self, "size", int(size))
        if min(self.hw) <= 0:
            raise ValueError(f"LetterboxSpec.size must be positive, got {self.size}")
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"LetterboxSpec.pad_value must be in 0..255, got {self.pad_value}")
        if self.stride is not None and any(v % self.stride for v in self.hw):
            raise ValueError(f"LetterboxSpec.size={self.size} is not a multiple of stride={self.stride}")
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError("LetterboxSpec.std must not contain zeros")

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        for name in ("mean", "std"):
            if d[name] is not None:
                d[name] = list(d[name])
        if isinstance(d["size"], tuple):
            d["size"] = list(d["size"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LetterboxSpec:
        """Inverse of :meth:`to_dict`. Unknown keys (from a newer writer) are ignored with a warning."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            warnings.warn(f"LetterboxSpec.from_dict: ignoring unknown keys {unknown}", stacklevel=2)
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def hw(self) -> tuple[int, int]:
        """``(height, width)`` of the model input."""
        return (self.size, self.size) if isinstance(self.size, int) else self.size

    def with_size(self, size: int | tuple[int, int]) -> LetterboxSpec:
        """The same spec at another input size (an int, or ``(height, width)``)."""
        d = self.to_dict()
        d["size"] = size if isinstance(size, (list, tuple)) else int(size)
        return LetterboxSpec.from_dict(d)


ULTRALYTICS = LetterboxSpec()
YOLOX = LetterboxSpec(center=False, rgb=False, scale=1.0)


@dataclass(frozen=True)
class LetterboxMeta:
    """What :func:`letterbox` did to one image, enough to map boxes both ways.

    Attributes:
        ratio: the resize factor ``r`` (both axes; the x axis when ``ratio_y`` is set).
        pad_x, pad_y: left and top padding in letterboxed pixels.
        orig_w, orig_h: original image size in pixels.
        ratio_y: the y factor of a stretching resize (``keep_ratio=False``); ``None`` = ``ratio``.
    """

    ratio: float
    pad_x: int
    pad_y: int
    orig_w: int
    orig_h: int
    ratio_y: float | None = None

    @property
    def ratios(self) -> tuple[float, float]:
        """``(x factor, y factor)``."""
        return self.ratio, (self.ratio if self.ratio_y is None else self.ratio_y)


def letterbox_geometry(orig_w: int, orig_h: int, spec: LetterboxSpec = ULTRALYTICS) -> tuple[LetterboxMeta, int, int]:
    """The geometry of the letterbox without touching pixels.

    Useful for mapping annotations when only the image size is known.

    Returns:
        ``(meta, new_w, new_h)``.
    """
    sh, sw = spec.hw
    if not spec.keep_ratio:
        return LetterboxMeta(sw / orig_w, 0, 0, int(orig_w), int(orig_h), sh / orig_h), sw, sh
    r = min(sh / orig_h, sw / orig_w)
    new_w, new_h = max(1, int(round(orig_w * r))), max(1, int(round(orig_h * r)))
    if spec.center:
        pad_x, pad_y = (sw - new_w) // 2, (sh - new_h) // 2
    else:
        pad_x, pad_y = 0, 0
    return LetterboxMeta(float(r), pad_x, pad_y, int(orig_w), int(orig_h)), new_w, new_h


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Accept HWC RGB uint8 (the contract), plus grayscale HW / HW1 and RGBA as conveniences."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"letterbox expects a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"letterbox expects an HWC image, got shape {image.shape}")
    c = image.shape[2]
    if c == 1:
        return np.repeat(image, 3, axis=2)
    if c == 4:
        return image[:, :, :3]
    if c != 3:
        raise ValueError(f"letterbox expects 1, 3 or 4 channels, got {c}")
    return image


def letterbox(image: np.ndarray, spec: LetterboxSpec = ULTRALYTICS) -> tuple[np.ndarray, LetterboxMeta]:
    """Letterbox one image into a model input.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (``(H, W)``, ``(H, W, 1)`` and RGBA are accepted too).
        spec: the recipe; :data:`ULTRALYTICS` by default.

    Returns:
        ``(chw, meta)``: a ``(3, S_h, S_w)`` float32 array and the :class:`LetterboxMeta` to map boxes.
    """
    image = _as_rgb_uint8(image)
    h, w = image.shape[:2]
    meta, new_w, new_h = letterbox_geometry(w, h, spec)
    if (new_w, new_h) != (w, h):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    sh, sw = spec.hw
    # Pad in uint8 (4x less memory traffic than float), then one fused cast+scale pass below.
    canvas = np.full((sh, sw, 3), spec.pad_value, dtype=np.uint8)
    canvas[meta.pad_y:meta.pad_y + new_h, meta.pad_x:meta.pad_x + new_w] = image
    if not spec.rgb:
        canvas = canvas[:, :, ::-1]
    chw = np.empty((3, sh, sw), dtype=np.float32)
    np.multiply(canvas.transpose(2, 0, 1), np.float32(spec.scale), out=chw, casting="unsafe")
    if spec.mean is not None:
        chw -= np.asarray(spec.mean, np.float32).reshape(-1, 1, 1)
    if spec.std is not None:
        chw /= np.asarray(spec.std, np.float32).reshape(-1, 1, 1)
    return chw, meta


def letterbox_boxes(boxes_xyxy: np.ndarray, meta: LetterboxMeta) -> np.ndarray:
    """Map ``(n, 4)`` xyxy boxes from original-image pixels to letterboxed pixels (training targets)."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    rx, ry = meta.ratios
    out = b * np.array([rx, ry, rx, ry])
    out[:, [0, 2]] += meta.pad_x
    out[:, [1, 3]] += meta.pad_y
    return out.astype(np.float32)


def unletterbox_boxes(boxes_xyxy: np.ndarray, meta: LetterboxMeta) -> np.ndarray:
    """Map ``(n, 4)`` xyxy boxes from letterboxed pixels back to the original image, clipped to it."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] -= meta.pad_x
    b[:, [1, 3]] -= meta.pad_y
    rx, ry = meta.ratios
    b /= np.array([rx, ry, rx, ry])
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, meta.orig_w)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, meta.orig_h)
    return b.astype(np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB with PIL.

    EXIF orientation is deliberately *not* applied: annotation files (COCO, VOC) give width/height
    and boxes in the stored pixel grid, and rotating would silently misalign them.

    Raises:
        OSError: the file is missing or not a decodable image. Decoders raise more than OSError for broken
            files (SyntaxError, ValueError; and once ultralytics is imported anywhere in the process, its
            patched ``Image.open`` answers an unidentified file by trying to install pi-heif, which can end
            in ModuleNotFoundError): every one of them becomes an OSError naming the file, so
            ``SkipUnreadable`` counts it instead of the epoch dying.
    """
    return np.asarray(open_rgb(path))


def open_rgb(path: str | Path) -> Image.Image:
    """``read_image`` as a PIL image (decoded, RGB, no EXIF rotation), for code that transforms with PIL; the
    same errors (every decoder failure an ``OSError`` naming the file)."""
    try:
        with Image.open(path) as im:
            if im.mode != "RGB":
                return im.convert("RGB")
            im.load()
            return im.copy()   # detached from the file: Pillow frees a closed image's pixels
    except OSError:
        raise
    except Exception as e:
        raise OSError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
