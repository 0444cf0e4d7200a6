"""The letterbox: geometry, pixel values, pad placement and box round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from yolo_common.preprocess import (
    ULTRALYTICS,
    YOLOX,
    LetterboxMeta,
    LetterboxSpec,
    letterbox,
    letterbox_boxes,
    letterbox_geometry,
    read_image,
    unletterbox_boxes,
)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    # Values in 1..254 so that no image pixel can be mistaken for the 114 pad... except by chance;
    # the pad tests below use a constant image colour that is not 114.
    return np.random.default_rng(seed).integers(1, 255, size=(h, w, 3), dtype=np.uint8)


def _const(h: int, w: int, rgb=(10, 200, 60)) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()


@pytest.mark.parametrize(
    "h, w, ratio, new_w, new_h, pad_x, pad_y",
    [
        (100, 200, 320 / 200, 320, 160, 0, 80),  # landscape: pad top/bottom
        (300, 150, 320 / 300, 160, 320, 80, 0),  # portrait: pad left/right
        (64, 64, 5.0, 320, 320, 0, 0),  # square, scaled up
        (101, 200, 1.6, 320, 162, 0, 79),  # round(161.6)=162, dh=158 -> 79 / 79
        (99, 200, 1.6, 320, 158, 0, 81),  # dh=162 -> 81 / 81
        (100, 203, 320 / 203, 320, 158, 0, 81),
        (50, 333, 320 / 333, 320, 48, 0, 136),
    ],
)
def test_geometry_centered(h, w, ratio, new_w, new_h, pad_x, pad_y):
    meta, nw, nh = letterbox_geometry(w, h, LetterboxSpec(size=320))
    assert (nw, nh) == (new_w, new_h)
    assert meta.ratio == pytest.approx(ratio)
    assert (meta.pad_x, meta.pad_y, meta.orig_w, meta.orig_h) == (pad_x, pad_y, w, h)


def test_odd_deficit_goes_right_and_bottom():
    # 321-wide canvas, 160-wide image: dw = 161 -> 80 left, 81 right.
    spec = LetterboxSpec(size=321)
    chw, meta = letterbox(_const(321, 160), spec)
    assert (meta.pad_x, meta.pad_y) == (80, 0)
    pad = spec.pad_value * spec.scale
    # Columns 0..79 and 240..320 (81 wide) are pad, the 160 in between are image.
    assert np.allclose(chw[:, :, :80], pad) and np.allclose(chw[:, :, 240:], pad)
    assert not np.isclose(chw[0, :, 80:240], pad).any()


@pytest.mark.parametrize("h, w", [(100, 200), (300, 150), (128, 128), (37, 301)])
def test_shapes_and_values(h, w):
    chw, meta = letterbox(_image(h, w), ULTRALYTICS.with_size(256))
    assert chw.shape == (3, 256, 256) and chw.dtype == np.float32
    assert chw.flags.c_contiguous
    assert 0.0 <= chw.min() and chw.max() <= 1.0


def test_same_size_is_an_exact_copy():
    img = _image(320, 320)
    chw, meta = letterbox(img, LetterboxSpec(size=320))
    assert meta == LetterboxMeta(1.0, 0, 0, 320, 320)
    np.testing.assert_allclose(chw, img.transpose(2, 0, 1).astype(np.float32) / 255, rtol=0, atol=1e-7)


def test_bilinear_pil_is_the_resampler():
    img = _image(100, 200)
    chw, meta = letterbox(img, LetterboxSpec(size=320))
    ref = np.asarray(Image.fromarray(img).resize((320, 160), Image.BILINEAR)).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(chw[:, 80:240], ref, atol=1e-6)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("h, w", [(100, 200), (200, 100)])
def test_pad_placement(center, h, w):
    spec = LetterboxSpec(size=200, center=center)
    chw, meta = letterbox(_const(h, w), spec)
    pad = 114 / 255
    is_pad = np.isclose(chw[0], pad)  # red channel: image red is 10/255
    rows, cols = np.where(~is_pad)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    if center:
        assert (x0, y0) == (meta.pad_x, meta.pad_y) == ((200 - (x1 - x0)) // 2, (200 - (y1 - y0)) // 2)
        assert meta.pad_x + meta.pad_y > 0
    else:
        assert (x0, y0) == (0, 0) == (meta.pad_x, meta.pad_y)
    assert (x1 - x0, y1 - y0) == (round(w * meta.ratio), round(h * meta.ratio))
    # Pad area is exactly the pad value in all channels.
    assert is_pad.sum() == 200 * 200 - (x1 - x0) * (y1 - y0)
    assert np.allclose(chw[:, is_pad], pad)
    # Image area keeps the constant colour in RGB order.
    np.testing.assert_allclose(chw[:, y0:y1, x0:x1].reshape(3, -1).mean(1), np.array([10, 200, 60]) / 255, atol=1e-6)


def test_yolox_preset_is_bgr_0_255_top_left():
    assert YOLOX == LetterboxSpec(center=False, rgb=False, scale=1.0)
    img = _const(50, 100, rgb=(10, 200, 60))
    chw, meta = letterbox(img, YOLOX.with_size(128))
    assert (meta.pad_x, meta.pad_y) == (0, 0)
    np.testing.assert_array_equal(chw[:, 10, 10], [60, 200, 10])  # BGR, raw 0-255
    np.testing.assert_array_equal(chw[:, 127, 127], [114, 114, 114])
    assert chw.max() == 200.0


def test_mean_std_are_applied_after_scaling_in_output_order():
    spec = LetterboxSpec(size=64, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    chw, _ = letterbox(_const(64, 64, rgb=(255, 0, 102)), spec)
    np.testing.assert_allclose(chw[:, 0, 0], [(1 - 0.5) / 0.5, (0 - 0.25) / 0.25, 0.4 / 2.0], atol=1e-6)


def test_grayscale_and_rgba_inputs():
    g = np.full((40, 80), 7, np.uint8)
    chw, _ = letterbox(g, LetterboxSpec(size=80, scale=1.0))
    assert chw.shape == (3, 80, 80) and chw[:, 40, 40].tolist() == [7, 7, 7]
    rgba = np.dstack([_const(80, 80), np.zeros((80, 80), np.uint8)])
    chw, _ = letterbox(rgba, LetterboxSpec(size=80, scale=1.0))
    assert chw[:, 0, 0].tolist() == [10, 200, 60]
    with pytest.raises(TypeError):
        letterbox(np.zeros((8, 8, 3), np.float32))


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("w, h", [(200, 100), (100, 300), (640, 640), (37, 301)])
def test_boxes_round_trip(center, w, h):
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1, (50, 2)) * [w, h]
    wh = rng.uniform(0, 1, (50, 2)) * [w, h]
    boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(np.float32)
    meta, _, _ = letterbox_geometry(w, h, LetterboxSpec(size=320, center=center))
    fwd = letterbox_boxes(boxes, meta)
    assert fwd.min() >= -1e-3 and fwd.max() <= 320 + 1e-3
    back = unletterbox_boxes(fwd, meta)
    assert np.abs(back - boxes).max() <= 1e-3
    # Forward is really a map into the padded canvas: x' = x * r + pad.
    np.testing.assert_allclose(fwd[:, 0], boxes[:, 0] * meta.ratio + meta.pad_x, atol=1e-3)
    np.testing.assert_allclose(fwd[:, 1], boxes[:, 1] * meta.ratio + meta.pad_y, atol=1e-3)


def test_boxes_land_on_the_pixels():
    # A white rectangle drawn on black must be found where letterbox_boxes puts it.
    img = np.zeros((100, 200, 3), np.uint8)
    img[20:60, 50:150] = 255
    chw, meta = letterbox(img, LetterboxSpec(size=400, pad_value=0))
    x1, y1, x2, y2 = letterbox_boxes([[50, 20, 150, 60]], meta)[0]
    rows, cols = np.where(chw[0] > 0.5)
    assert abs(cols.min() - x1) <= 1 and abs(cols.max() + 1 - x2) <= 1
    assert abs(rows.min() - y1) <= 1 and abs(rows.max() + 1 - y2) <= 1


def test_unletterbox_clips_to_image():
    meta = LetterboxMeta(ratio=2.0, pad_x=0, pad_y=40, orig_w=100, orig_h=50)
    back = unletterbox_boxes([[-10, 0, 250, 200]], meta)
    np.testing.assert_allclose(back, [[0, 0, 100, 50]])
    assert unletterbox_boxes(np.zeros((0, 4)), meta).shape == (0, 4)


def test_spec_dict_round_trip_through_json():
    for spec in (ULTRALYTICS, YOLOX, LetterboxSpec(size=320, mean=[0.485, 0.456, 0.406], std=(0.229, 0.224, 0.225), stride=32)):
        back = LetterboxSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert back == spec and hash(back) == hash(spec)
    assert LetterboxSpec(mean=[1, 2, 3]).mean == (1.0, 2.0, 3.0)
    with pytest.warns(UserWarning, match="unknown"):
        assert LetterboxSpec.from_dict({"size": 320, "future_knob": 1}) == LetterboxSpec(size=320)


def test_spec_validation():
    with pytest.raises(ValueError, match="stride"):
        LetterboxSpec(size=100, stride=32)
    with pytest.raises(ValueError):
        LetterboxSpec(pad_value=300)
    with pytest.raises(ValueError):
        LetterboxSpec(mean=(1, 2))


def test_read_image_rgb(tmp_path):
    img = _const(30, 40)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img[:, :, 0]).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), img)
    assert read_image(tmp_path / "g.png").shape == (30, 40, 3)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(OSError):
        read_image(tmp_path / "bad.jpg")


def test_open_rgb_returns_a_detached_rgb_image(tmp_path):
    from yolo_common.preprocess import open_rgb

    img = _const(30, 40)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img[:, :, 0]).save(tmp_path / "g.png")
    Image.fromarray(np.dstack([img, np.full((30, 40), 200, np.uint8)])).save(tmp_path / "rgba.png")
    a = open_rgb(tmp_path / "a.png")
    (tmp_path / "a.png").unlink()                       # the pixels no longer depend on the file
    np.testing.assert_array_equal(np.asarray(a.resize((40, 30))), img)
    assert [open_rgb(tmp_path / n).mode for n in ("g.png", "rgba.png")] == ["RGB", "RGB"]
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(OSError, match="bad.jpg"):
        open_rgb(tmp_path / "bad.jpg")


def test_read_image_turns_any_decoder_failure_into_oserror(tmp_path, monkeypatch):
    """ultralytics (imported by another project in the same process) patches PIL.Image.open; for an
    unidentified file it tries to install pi-heif and can raise ModuleNotFoundError. Still an OSError."""
    from PIL import Image as PILImage

    def patched_open(*a, **k):
        raise ModuleNotFoundError("No module named 'pi_heif'")

    monkeypatch.setattr(PILImage, "open", patched_open)
    with pytest.raises(OSError, match=r"x\.jpg.*ModuleNotFoundError"):
        read_image(tmp_path / "x.jpg")


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("h, w", [(50, 200), (200, 50), (96, 128)])
def test_non_square_target(center, h, w):
    # (height, width) target, as YOLOX's `input_size 96,128`: r = min(96/h, 128/w), pad on each axis.
    spec = LetterboxSpec(size=(96, 128), center=center)
    assert spec.hw == (96, 128)
    img = _const(h, w)
    chw, meta = letterbox(img, spec)
    assert chw.shape == (3, 96, 128)
    r = min(96 / h, 128 / w)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    assert meta.ratio == pytest.approx(r)
    assert (meta.pad_x, meta.pad_y) == (((128 - nw) // 2, (96 - nh) // 2) if center else (0, 0))
    # The image occupies exactly its box; everything else is pad.
    inside = np.zeros((96, 128), bool)
    inside[meta.pad_y:meta.pad_y + nh, meta.pad_x:meta.pad_x + nw] = True
    assert np.all(chw[:, ~inside] == pytest.approx(114 / 255))
    assert np.allclose(chw[:, inside], np.array([10, 200, 60])[:, None] / 255, atol=1e-6)
    boxes = np.array([[3.0, 4.0, w - 5.0, h - 2.0]])
    np.testing.assert_allclose(unletterbox_boxes(letterbox_boxes(boxes, meta), meta), boxes, atol=1e-4)


def test_non_square_spec_normalises_and_serialises():
    assert LetterboxSpec(size=(64, 64)) == LetterboxSpec(size=64)      # equal sides are the int
    spec = YOLOX.with_size([96, 128])
    assert spec.size == (96, 128) and YOLOX.with_size(96).size == 96
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["size"] == [96, 128] and LetterboxSpec.from_dict(d) == spec
    with pytest.raises(ValueError, match="stride"):
        LetterboxSpec(size=(64, 100), stride=32)
    with pytest.raises(ValueError, match="height, width"):
        LetterboxSpec(size=(1, 2, 3))
    with pytest.raises(ValueError, match="positive"):
        LetterboxSpec(size=(0, 32))


def test_stretch_resize_keep_ratio_false():
    # YOLOv1's input: the image stretched to S x S, each axis its own factor, no padding; boxes round-trip.
    spec = LetterboxSpec(size=64, keep_ratio=False, scale=1.0)
    img = _image(40, 100)
    chw, meta = letterbox(img, spec)
    assert chw.shape == (3, 64, 64) and (meta.pad_x, meta.pad_y) == (0, 0)
    assert meta.ratios == (pytest.approx(0.64), pytest.approx(1.6))
    ref = np.asarray(Image.fromarray(img).resize((64, 64), Image.BILINEAR)).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(chw, ref)
    boxes = np.array([[10.0, 5.0, 90.0, 35.0]])
    lb = letterbox_boxes(boxes, meta)
    np.testing.assert_allclose(lb, [[6.4, 8.0, 57.6, 56.0]], atol=1e-4)
    np.testing.assert_allclose(unletterbox_boxes(lb, meta), boxes, atol=1e-4)
    assert LetterboxSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
