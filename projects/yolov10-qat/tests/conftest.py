"""Shared fixtures: one smoke run for the whole session (the slow part), tiny models for the fast tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """``run --preset smoke --data synthetic`` end to end, once (about 4 min on 2 cores: both models train 30
    epochs, so the learning bound can be checked); returns the run root."""
    from yolov10_qat.cli import main

    root = tmp_path_factory.mktemp("smoke") / "run"
    assert main(["run", "--preset", "smoke", "--data", "synthetic", "--run-root", str(root)]) == 0
    return root


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory):
    """A tiny COCO-layout synthetic set (no training): the root directory."""
    from yolo_common.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("syn"), layouts=("coco",), num_train=6, num_val=4,
                          image_size=96, seed=1)["coco"]


@pytest.fixture(scope="session")
def float_model():
    """A random-init yolov10n DetectionModel with 3 classes (train mode)."""
    from yolov10_qat._env import ultralytics_env

    ultralytics_env()
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    return DetectionModel("yolov10n.yaml", nc=3, verbose=False)
