"""Shared fixtures: a tiny synthetic COCO set (yolo_common.synthetic, seconds, no downloads)."""

import pytest


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory):
    from yolo_common.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("shapes")
    return make_synthetic(out, layouts=("coco",), num_train=16, num_val=4, image_size=96, seed=0)["coco"]



@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """One intra-op thread for this project's tests only (restored afterwards, so a repo-wide pytest run
    keeps other projects' settings): on a shared 2-core box OpenMP's spinning threads fight the other
    processes and a nano step got ~50x slower with 2 threads than with 1 (measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
