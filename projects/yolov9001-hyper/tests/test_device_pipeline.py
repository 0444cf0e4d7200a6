"""The device-side data path (``gpu_collate``, ``cuda_prefetch``) on CPU tensors: every batch op keeps boxes
on their pixels, equals the CPU op for the same parameters, and the whole device-mode dataset gives the CPU
path's boxes for the same seed, through workers and the prefetcher too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_augment import COLOURS, check_boxes_on_pixels, make_sample

from yolov9001.core.config import get_config
from yolov9001.utils import augment as A
from yolov9001.utils import device_ops as D
from yolov9001.utils.batches import DeviceBatches
from yolov9001.utils.dataloaders import create_dataloader
from yolov9001.utils.dataset import DetectionDataset, collate
from yolov9001.utils.device_collate import DeviceCollate, pack_collate
from yolov9001.utils.prefetch import CudaPrefetcher

S = 128
OPS = {   # one knob per op (the validator's gpu_ops cases), plus everything at once
    "rotate": {"degrees": 30.0}, "translate": {"translate": 0.2}, "scale": {"scale": 0.5}, "shear": {"shear": 10.0},
    "perspective": {"perspective": 0.001}, "combo": {"degrees": 10.0, "translate": 0.1, "scale": 0.4, "shear": 3.0},
}


def _matrices(over: dict, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = {"degrees": 0.0, "translate": 0.0, "scale": 0.0, "shear": 0.0, "perspective": 0.0, **over}
    return np.stack([A.affine_matrix(rng, S, k["degrees"], k["translate"], k["scale"], k["shear"], k["perspective"])
                     for _ in range(n)])


@pytest.mark.parametrize("op", sorted(OPS))
def test_device_box_transform_equals_cpu(op):
    """Same matrices -> the same warped, clipped and filtered boxes (kept set and coordinates)."""
    rng = np.random.default_rng(1)
    m = _matrices(OPS[op], 16, seed=2)
    for k in range(16):
        xy = rng.uniform(-20, S + 20, (40, 2))
        boxes = np.concatenate((xy, xy + rng.uniform(1, 60, (40, 2))), 1).astype(np.float32)
        cls = np.arange(40)
        ref, ref_cls = A.filter_boxes(A.warp_boxes(boxes, m[k]), cls, S, S, 0.25, 2.0)
        mt = torch.from_numpy(m[k])[None].expand(40, 3, 3)
        clipped, keep = D.filter_boxes(D.warp_boxes(torch.from_numpy(boxes), mt), S, S, 0.25, 2.0)
        assert keep.sum() == len(ref) > 0
        np.testing.assert_array_equal(cls[keep.numpy()], ref_cls)
        np.testing.assert_allclose(clipped[keep].numpy(), ref, atol=1e-3)


@pytest.mark.parametrize("op", sorted(OPS))
def test_device_warp_keeps_boxes_on_pixels_and_matches_opencv(op):
    """The batch warp moves pixels where the box transform moves boxes (pure-colour objects found again),
    and its pixels are OpenCV's up to interpolation rounding."""
    rng = np.random.default_rng(3)
    samples = [make_sample(rng, 96, 128) for _ in range(4)]
    m = _matrices(OPS[op], 4, seed=4)
    src = torch.from_numpy(np.stack([s[0] for s in samples])).permute(0, 3, 1, 2).float()
    out = D.warp_images(src, torch.from_numpy(m), S, 114.0).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    for k, (img, boxes, cls) in enumerate(samples):
        mt = torch.from_numpy(m[k])[None].expand(len(boxes), 3, 3)
        clipped, keep = D.filter_boxes(D.warp_boxes(torch.from_numpy(boxes), mt), S, S, 0.0, 0.0)
        rotated = op in ("rotate", "shear", "combo", "perspective")
        check_boxes_on_pixels(out[k], clipped[keep].float().numpy(), cls[keep.numpy()], min_fill=0.4 if rotated else 0.8)
        ref = A.warp_image(img, m[k], S, 114, perspective=op == "perspective")
        diff = np.abs(out[k].astype(int) - ref.astype(int))
        assert diff.mean() < 1.0, diff.mean()


def test_device_hsv_matches_opencv_luts():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    img[:16] = COLOURS[0]
    img[16:24] = 128   # grey: no hue, no saturation
    x = torch.from_numpy(np.stack([img, img])).permute(0, 3, 1, 2).float()
    for gains in ((0.0, 1.0, 1.0), (0.015, 1.7, 0.6), (-0.015, 0.3, 1.4), (0.5, 1.0, 1.0)):
        ref = A.apply_hsv(img, np.array(gains))
        out = D.hsv_jitter(x, torch.tensor([gains, gains]))[0].permute(1, 2, 0).numpy()
        diff = np.abs(out - ref.astype(np.float64))
        # OpenCV quantises H to 180 steps and S, V to uint8 before and after the LUTs
        assert diff.mean() < 1.5 and np.percentile(diff, 99) < 8, (gains, diff.mean(), np.percentile(diff, 99))
        assert np.ptp(out[16:24], axis=-1).max() < 1e-3   # grey stays grey
    same = D.hsv_jitter(x, torch.tensor([(0.0, 1.0, 1.0)] * 2))
    assert (same - x).abs().max() < 1e-3


@pytest.fixture(scope="module")
def shapes_split(tmp_path_factory):
    """8 images of different sizes and aspect ratios with pure-colour objects."""
    from yolo_common.data import DatasetSplit, ImageRecord

    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    records = []
    for k in range(8):
        img, boxes, cls = make_sample(rng, int(rng.integers(72, 128)), int(rng.integers(72, 160)))
        path = root / f"{k}.png"
        Image.fromarray(img).save(path)
        records.append(ImageRecord(path, img.shape[1], img.shape[0], boxes, cls, image_id=k))
    return DatasetSplit(records, [{"id": c, "name": str(c)} for c in range(3)], root, "train", "yolo")


PIPELINES = {   # hyp overrides: every path of DetectionDataset._geometric and the ops after it
    "high": {"mosaic": 1.0, "mixup": 0.3, "copy_paste": 0.3, "translate": 0.1, "scale": 0.5, "fliplr": 0.5,
             "flipud": 0.5, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4},
    "rotated_mosaic": {"mosaic": 0.5, "degrees": 20.0, "shear": 5.0, "translate": 0.1, "scale": 0.3, "fliplr": 0.5},
    "perspective": {"mosaic": 0.0, "perspective": 0.001, "translate": 0.1},
    "letterbox_only": {"mosaic": 0.0, "translate": 0.0, "scale": 0.0, "fliplr": 0.0, "hsv_h": 0.0, "hsv_s": 0.0,
                       "hsv_v": 0.0, "letterbox_center": False},
    # copy-paste onto a letterboxed canvas with no affine knob: random_affine's no-warp branch (filters too)
    "paste_no_mosaic": {"mosaic": 0.0, "copy_paste": 1.0, "translate": 0.0, "scale": 0.0, "min_box_size": 30.0},
    "mixup_no_mosaic": {"mosaic": 0.0, "mixup": 1.0, "translate": 0.1, "flipud": 0.5},
    "close_mosaic_phase": {"mosaic": 1.0, "mixup": 0.5, "copy_paste": 0.5, "scale": 0.5, "close_mosaic": 10},
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_device_mode_dataset_gives_the_cpu_boxes(shapes_split, name):
    """The same seed through DetectionDataset (CPU path) and device mode + DeviceCollate: identical boxes and
    classes, pixels equal up to resampling (mean < 2.5 grey levels)."""
    cfg = get_config(hyp={"close_mosaic": 0, **PIPELINES[name], "epochs": 10, "imgsz": S})
    cpu = DetectionDataset(shapes_split, cfg, S, augment=True, seed=7)
    dev = DetectionDataset(shapes_split, cfg, S, augment=True, seed=7, device_mode=True)
    collate_fn = DeviceCollate(S, cfg.pad_value, "cpu")
    for epoch in (0, 1):
        cpu.set_epoch(epoch)
        dev.set_epoch(epoch)
        x, targets, _ = collate_fn(pack_collate([dev[i] for i in range(len(dev))]))
        assert x.shape == (8, 3, S, S) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        for i in range(len(cpu)):
            img, t, _ = cpu[i]
            d = targets[targets[:, 0] == i]
            assert len(d) == len(t)
            np.testing.assert_array_equal(d[:, 1].numpy(), t[:, 0].numpy())
            np.testing.assert_allclose(d[:, 2:].numpy(), t[:, 1:].numpy(), atol=1e-3)
            pix = (x[i].permute(1, 2, 0) * 255).numpy()
            assert np.abs(pix - img.numpy()).mean() < 2.5


def test_device_mode_validation_is_pixel_exact(shapes_split):
    """No augmentation: the device letterbox is a copy into place, equal to the CPU letterbox bit for bit."""
    cfg = get_config(hyp={"imgsz": S})
    cpu = DetectionDataset(shapes_split, cfg, S, augment=False)
    dev = DetectionDataset(shapes_split, cfg, S, augment=False, device_mode=True)
    images, ref_t, ref_m = collate([cpu[i] for i in range(8)])
    x, t, metas = DeviceCollate(S, cfg.pad_value, "cpu")(pack_collate([dev[i] for i in range(8)]))
    assert torch.equal((x * 255).round().byte(), images.permute(0, 3, 1, 2))
    assert torch.allclose(t, ref_t, atol=1e-4)
    assert [m["pad"] for m in metas] == [m["pad"] for m in ref_m]
    assert [m["ratio"] for m in metas] == [m["ratio"] for m in ref_m]


def test_packed_batch_ships_fewer_bytes_than_letterboxed(shapes_split):
    cfg = get_config(hyp={"imgsz": S})
    dev = DetectionDataset(shapes_split, cfg, S, augment=False, device_mode=True)
    packed = pack_collate([dev[i] for i in range(8)])
    assert packed["pixels"].dtype == torch.uint8
    assert packed["pixels"].numel() == sum(h * w * 3 for h, w in packed["host"]["shapes"].tolist()) < 8 * S * S * 3


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_gpu_collate_and_prefetch_equal_cpu_path(synthetic, workers):
    """create_dataloader + DeviceBatches with gpu_collate and cuda_prefetch (synchronous on the CPU): the
    same boxes as the CPU path, batch by batch, with worker processes too; the prefetcher counts the bytes."""
    base = {"imgsz": 64, "batch_size": 4, "workers": workers, "epochs": 3, "close_mosaic": 0, "mixup": 0.2,
            "copy_paste": 0.2, "degrees": 5.0}
    cpu_cfg = get_config(hyp=base)
    dev_cfg = get_config(hyp={**base, "gpu_collate": True, "cuda_prefetch": True, "buffer_depth": 3})
    ref_loader, _ = create_dataloader(synthetic["yolo"], "train", cpu_cfg, augment=True, progress=False)
    loader, _ = create_dataloader(synthetic["yolo"], "train", dev_cfg, augment=True, progress=False)
    batches = DeviceBatches(loader, dev_cfg, "cpu")
    ref = DeviceBatches(ref_loader, cpu_cfg, "cpu")
    n = 0
    for (x, t, _), (rx, rt, _) in zip(batches, ref):
        assert x.shape == rx.shape and (x - rx).abs().mean() * 255 < 2.5
        assert t.shape == rt.shape and torch.allclose(t, rt, atol=1e-3)
        n += 1
    assert n == len(loader) == 4
    assert batches.prefetcher.h2d_bytes > 0 and ref.prefetcher is None


def test_prefetcher_moves_nested_batches_and_counts_bytes():
    host = {"shapes": torch.ones(2, 2)}
    batches = [{"a": torch.zeros(4, dtype=torch.uint8), "b": [torch.ones(2, 3)], "m": [{"k": 1}], "host": host}, None]
    pre = CudaPrefetcher(batches, "cpu", buffer_depth=2)
    out = list(pre)
    assert out[1] is None and out[0]["m"] == [{"k": 1}] and torch.equal(out[0]["b"][0], torch.ones(2, 3))
    assert out[0]["host"] is host          # host metadata is neither moved nor counted
    assert pre.h2d_bytes == 4 + 24
    with pytest.raises(ValueError, match="buffer_depth"):
        CudaPrefetcher(batches, "cpu", buffer_depth=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_prefetch_and_device_collate_on_gpu(shapes_split):
    cfg = get_config(hyp={**PIPELINES["high"], "epochs": 10, "imgsz": S, "close_mosaic": 0})
    dev = DetectionDataset(shapes_split, cfg, S, augment=True, seed=7, device_mode=True)
    packed = []
    for epoch in range(3):
        dev.set_epoch(epoch)
        p = pack_collate([dev[i] for i in range(8)])
        p["pixels"] = p["pixels"].pin_memory()   # as the DataLoader's pin_memory does
        packed.append(p)
    gpu_collate = DeviceCollate(S, cfg.pad_value, "cuda")
    outs = [gpu_collate(b) for b in CudaPrefetcher(packed, "cuda", buffer_depth=2)]
    for (x, t, _), p in zip(outs, packed):
        assert x.is_cuda and t.is_cuda and not p["host"]["matrices"].is_cuda
        xc, tc, _ = DeviceCollate(S, cfg.pad_value, "cpu")(p)
        assert torch.allclose(t.cpu(), tc, atol=1e-3)
        assert (x.cpu() - xc).abs().mean() < 1e-3


def test_ram_cache_compressed_and_read_counts(shapes_split, tmp_path):
    from yolov9001.utils.cache import ImageCache
    from yolov9001.utils.dataset import load_resized

    paths = [r.path for r in shapes_split.records]
    plain = ImageCache(paths, S, lambda p: load_resized(p, S), "ram").build(progress=False)
    packed = ImageCache(paths, S, lambda p: load_resized(p, S), "ram", compression="lz4").build(progress=False)
    assert isinstance(packed._ram[0], bytes)
    for i in range(len(paths)):
        assert np.array_equal(plain.get(i), packed.get(i))
    assert packed.reads == {"hits": len(paths), "misses": 0}
    none = ImageCache(paths, S, lambda p: load_resized(p, S), "none")
    none.get(0)
    assert none.reads == {"hits": 0, "misses": 1}


def test_training_runs_with_the_device_pipeline(synthetic, tmp_path):
    """The real CLI with gpu_collate + cuda_prefetch: trains, validates through the device letterbox, and its
    first-step loss is the CPU path's up to the resampling difference."""
    import json

    from yolov9001.cli import main

    losses = {}
    for tag, extra in (("cpu", ""), ("device", ",gpu_collate:true,cuda_prefetch:true")):
        res = main(["train", "--data", str(synthetic["yolo"]), "--img-size", "64", "--epochs", "1", "--batch-size", "8",
                    "--workers", "1", "--log-dir", str(tmp_path / tag), "--tb-only", "--device", "cpu",
                    "--hypo", "warmup_min_iters:0,nbs:8,degrees:5" + extra])
        run = Path(res["run_dir"])
        first = json.loads((run / "logs" / "train.jsonl").read_text().splitlines()[0])
        losses[tag] = first["loss"]
        assert np.isfinite(res["AP"])
    assert losses["device"] == pytest.approx(losses["cpu"], rel=0.05)


def test_config_refuses_a_zero_buffer_depth():
    from yolov9001.core.config import ConfigError

    with pytest.raises(ConfigError, match="buffer_depth"):
        get_config(hyp={"buffer_depth": 0})


def test_device_collate_with_empty_targets_and_degenerate_matrices():
    """Images without boxes, a collapsed scale (near-singular matrix) and a perspective that puts corners behind
    the camera: finite pixels (pad where nothing maps), boxes dropped rather than NaN, the same as the CPU rule."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    m_ok = np.eye(3)
    m_tiny = np.diag([1e-9, 1e-9, 1.0])                 # everything shrinks to a point
    m_behind = np.array([[1.0, 0, 0], [0, 1, 0], [-0.05, 0, 1]])   # w <= 0 for x >= 20
    items = []
    for m, boxes in ((m_ok, np.zeros((0, 4), np.float32)), (m_tiny, np.array([[5, 5, 40, 30]], np.float32)),
                     (m_behind, np.array([[2, 2, 10, 10], [30, 5, 60, 40]], np.float32))):
        t = torch.cat((torch.zeros(len(boxes), 1), torch.from_numpy(boxes)), 1) if len(boxes) else torch.zeros(0, 5)
        items.append((torch.from_numpy(img.copy()), t, {"index": 0, "device": {"matrix": m, "hsv": (0.01, 1.2, 0.8),
                                                                            "filter": (0.25, 2.0)}}))
    x, t, _ = DeviceCollate(S, 114, "cpu")(pack_collate(items))
    assert torch.isfinite(x).all() and x.shape == (3, 3, S, S)
    assert torch.isfinite(t).all()
    assert (x[1].max() - x[1].min()) * 255 < 1.0         # the collapsed image: all (grey, jittered) border
    assert t[:, 0].tolist() == [2.0]                    # sample 0 had none, sample 1's box vanished,
    b = t[0, 2:].numpy()                                # sample 2 keeps only the box in front of the camera
    ref, _ = A.filter_boxes(A.warp_boxes(np.array([[2, 2, 10, 10]], np.float32), m_behind), np.zeros(1, np.int64),
                            S, S, 0.25, 2.0)
    np.testing.assert_allclose(b, ref[0], atol=1e-3)
