"""Shared fixtures of the common tests. Keep them session-scoped and read-only: copy before corrupting."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synthetic_paths(tmp_path_factory):
    """``{"coco": root, "yolo": data.yaml, "voc": root}`` of a small seeded shapes set (8 train, 6 val)."""
    from yolo_common.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("synthetic"), num_train=8, num_val=6, seed=0)


@pytest.fixture(scope="session")
def synthetic_root(synthetic_paths):
    """The folder holding the ``coco/``, ``yolo/`` and ``voc/`` layouts of ``synthetic_paths``."""
    return synthetic_paths["coco"].parent
