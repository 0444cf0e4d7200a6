"""Shared fixtures. No test reaches the hub: offline mode is forced before transformers is imported."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every model here is built locally

import pytest
import torch


@pytest.fixture
def tiny_model():
    """A 4-block random YOLOS (hidden 64, 64 x 96 input, 3 classes), seeded."""
    from yolos_bf16accum.model import tiny_yolos_config
    from transformers import YolosForObjectDetection

    torch.manual_seed(0)
    return YolosForObjectDetection(tiny_yolos_config(num_labels=3, image_size=(64, 96)))


@pytest.fixture
def tiny_batch():
    """Two 64 x 96 images with two and one boxes (normalised cx, cy, w, h)."""
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(2, 3, 64, 96, generator=g)
    labels = [
        {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]])},
        {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]
    return pixels, labels
