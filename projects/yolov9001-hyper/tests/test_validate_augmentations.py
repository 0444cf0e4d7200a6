"""tools/validate_augmentations.py on the synthetic set: the seed's folders, files and csv columns, a passing
check on the real ops, and exit 1 naming the case when an op moves boxes off their objects."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
import validate_augmentations as V
from PIL import Image

from yolov9001.utils import augment as A
from yolov9001.utils import aug_checks as C
from yolov9001.utils import device_ops as D

SEED_COLUMNS = ["cpu_fetch_ms", "gpu_total_ms", "gpu_aug_ms", "h2d_bytes", "buffer_depth", "cuda_mem_allocated_mb",
                "cuda_mem_reserved_mb", "cuda_mem_max_allocated_mb", "cache_hits", "cache_misses", "item_load_ms",
                "item_letterbox_ms", "item_cpu_aug_ms"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def default_run(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("aug") / "aug_outcomes"
    code = V.main(["--data", str(synthetic["yolo"]), "--img-size", "96", "--out", str(out), "--samples", "2"])
    return code, out


def test_default_mode_writes_the_seed_folders_and_passes(default_run):
    code, out = default_run
    assert code == 0
    cpu = sorted(p.name for p in (out / "cpu_ops").iterdir())
    gpu = sorted(p.name for p in (out / "gpu_ops").iterdir())
    assert "mosaic_only_1.jpg" in cpu
    for prefix in ("mixup_only_", "copy_paste_only_"):
        assert any(n.startswith(prefix) for n in cpu), prefix
    for prefix in ("rotate_symmetric_deg_", "translate_", "scale_", "shear_", "perspective_", "fliplr_", "flipud_",
                   "hsv_", "combo_"):
        assert sum(n.startswith(prefix) for n in gpu) == 2, prefix
    im = Image.open(out / "gpu_ops" / "combo_1.jpg")
    assert im.size[0] >= 2 * 96 and im.size[1] > 2 * 96   # a 2 x 2 grid of --gpu-batch 4 canvases with headers
    rows = _rows(out / "checks.csv")
    assert [r["case"] for r in rows] == [c for c, _ in V.CPU_CASES] + [c for c, _ in V.GPU_CASES]
    assert all(r["passed"] == "True" and int(r["boxes_judged"]) > 0 for r in rows)
    assert {r["device"] for r in rows if r["suite"] == "gpu_ops"} == {"cpu"}   # no CUDA here: named as such


def test_full_pipeline_on_coco_writes_metrics_with_the_seed_columns(synthetic, tmp_path):
    out = tmp_path / "aug"
    code = V.main(["--data", str(synthetic["coco"]), "--img-size", "64", "--out", str(out), "--full-pipeline",
                   "--batch-size", "4", "--num-workers", "1", "--prefetch-factor", "2", "--gpu-collate",
                   "--cuda-prefetch", "--cache", "ram", "--ram-compress", "--samples", "2", "--per-grid", "4"])
    assert code == 0
    assert sorted(p.name for p in (out / "full_pipeline").glob("pipeline_*.jpg")) == ["pipeline_1.jpg", "pipeline_2.jpg"]
    rows = _rows(out / "full_pipeline" / "metrics.csv")
    assert len(rows) == 3 and rows[0]["warmup"] == "1"
    assert set(SEED_COLUMNS) <= set(rows[0])
    for r in rows:
        assert r["cuda_mem_allocated_mb"] == ""                 # empty on the CPU
        assert int(r["h2d_bytes"]) > 0 and r["buffer_depth"] == "2"
        assert float(r["gpu_aug_ms"]) > 0 and float(r["item_load_ms"]) >= 0
    assert int(rows[-1]["cache_hits"]) > 0 and rows[-1]["cache_misses"] == "0"   # everything from the RAM cache
    check = _rows(out / "checks.csv")
    assert check[0]["case"] == "pipeline" and check[0]["passed"] == "True"


def test_a_device_op_that_shifts_boxes_fails_and_is_named(synthetic, tmp_path, monkeypatch, capsys):
    warp = D.warp_boxes
    monkeypatch.setattr(D, "warp_boxes", lambda boxes, m: warp(boxes, m) + 6.0)
    code = V.main(["--data", str(synthetic["yolo"]), "--img-size", "96", "--out", str(tmp_path / "a"), "--samples", "1"])
    assert code == 1
    failed = capsys.readouterr().out.split("FAILED: ")[1].split(":")[0].split(", ")
    assert set(failed) == {c for c, _ in V.GPU_CASES}     # every device case, and no CPU case


def test_a_device_op_that_drops_boxes_fails(synthetic, tmp_path, monkeypatch, capsys):
    """Nothing judged is a failure, and losing boxes shows in the recall (no box left to test otherwise)."""
    filt = D.filter_boxes

    def drop_all(*args, **kwargs):
        clipped, keep = filt(*args, **kwargs)
        return clipped, keep & False

    monkeypatch.setattr(D, "filter_boxes", drop_all)
    code = V.main(["--data", str(synthetic["yolo"]), "--img-size", "96", "--out", str(tmp_path / "d"), "--samples", "1"])
    assert code == 1
    rows = {r["case"]: r for r in _rows(tmp_path / "d" / "checks.csv")}
    assert all(rows[c]["passed"] == "False" and float(rows[c]["recall"]) < 0.5 for c, _ in V.GPU_CASES)
    assert all(rows[c]["passed"] == "True" for c, _ in V.CPU_CASES)


def test_a_cpu_op_that_shifts_boxes_fails_and_is_named(synthetic, tmp_path, monkeypatch, capsys):
    layout = A._mosaic_layout   # both mosaic paths (fused with the affine, and two-step) place boxes here

    def shifted(*args, **kwargs):
        tiles, boxes, cls = layout(*args, **kwargs)
        return tiles, boxes + np.float32(6), cls

    monkeypatch.setattr(A, "_mosaic_layout", shifted)
    code = V.main(["--data", str(synthetic["yolo"]), "--img-size", "96", "--out", str(tmp_path / "b"), "--samples", "1"])
    assert code == 1
    assert "FAILED: mosaic_only:" in capsys.readouterr().out


def test_check_boxes_catches_loose_and_shifted_boxes():
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 20:40] = 255
    good = np.array([[20.0, 10.0, 40.0, 30.0]])
    assert C.check_boxes(mask, good, 0.7).ok == 1
    assert C.check_boxes(mask, good + 5, 0.7).ok == 0                    # shifted
    assert C.check_boxes(mask, np.array([[14.0, 4.0, 46.0, 36.0]]), 0.3).ok == 0   # loose on every side
    tiny = C.check_boxes(mask, np.array([[0.0, 0.0, 3.0, 3.0]]), 0.7)
    assert (tiny.boxes, tiny.judged) == (1, 0)                           # too small to judge: counted only


def test_check_accepts_a_rotated_bar_and_rejects_its_shifted_hull():
    """An 8:1 bar turned by 30 degrees fills ~0.2 of its hull: still judged on its object."""
    from PIL import ImageDraw

    im = Image.new("L", (200, 200), 0)
    c, s_ = np.cos(np.radians(30)), np.sin(np.radians(30))
    pts = np.array([[-48, -6], [48, -6], [48, 6], [-48, 6]]) @ np.array([[c, s_], [-s_, c]]) + 100
    ImageDraw.Draw(im).polygon([tuple(p) for p in pts], fill=255)
    hull = np.array([[pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]])
    mask = np.asarray(im)
    assert C.check_boxes(mask, hull, 0.1).ok == 1
    assert C.check_boxes(mask, hull + [6, 0, 6, 0], 0.1).ok == 0


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "stuff").mkdir()
    res = subprocess.run([sys.executable, V.__file__, "--data", str(tmp_path), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and str(tmp_path) in res.stderr
