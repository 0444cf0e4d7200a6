"""Shared fixtures: small generated datasets (never downloads)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory):
    """A synthetic shapes set in the VOC layout (3 classes, 128 px): returns the folder holding VOCdevkit."""
    from yolo_common.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    return make_synthetic(out, layouts=("voc",), num_train=12, num_val=6, image_size=128, max_objects=3, seed=1)["voc"]


@pytest.fixture()
def fresh_accelerate():
    """Resets accelerate's process-wide state after a test that built an Accelerator itself."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
