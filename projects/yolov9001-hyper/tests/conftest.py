"""Shared fixtures: one synthetic dataset (YOLO + COCO layouts) and one briefly trained checkpoint per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(PROJECT / "tools"))  # reference_weights for the parity test, the augmentation validator
sys.path.insert(0, str(HERE))  # test_augment's pure-colour samples, shared with test_device_pipeline


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep image caches and generated data.yaml files out of the real ~/.cache."""
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    yield
    if old is not None:
        os.environ["HOME"] = old


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> dict:
    from yolo_common.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    paths = make_synthetic(out, layouts=("coco", "yolo"), num_train=16, num_val=8, image_size=96, seed=0)
    return {"coco": paths["coco"], "yolo": paths["yolo"].parent, "yolo_yaml": paths["yolo"]}


@pytest.fixture(scope="session")
def trained(synthetic, tmp_path_factory) -> dict:
    """1 epoch of Hyper-YOLO-N at 64 px on the YOLO layout through the real CLI."""
    from yolov9001.cli import main

    log_dir = tmp_path_factory.mktemp("runs")
    result = main(["train", "--data", str(synthetic["yolo"]), "--img-size", "64", "--epochs", "1", "--batch-size",
                   "8", "--workers", "0", "--log-dir", str(log_dir), "--tb-only", "--device", "cpu",
                   "--hypo", "warmup_min_iters:0,nbs:8"])
    run = Path(result["run_dir"])
    return {"run": run, "last": run / "checkpoints" / "last.pt", "best": run / "checkpoints" / "best.pt",
            "log_dir": log_dir}
