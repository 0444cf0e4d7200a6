"""Shared fixtures: a tiny synthetic COCO set (yolo_common.synthetic, seconds, no downloads) and a tiny
end-to-end training run."""

import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory):
    from yolo_common.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("shapes")
    return make_synthetic(out, layouts=("coco",), num_train=16, num_val=4, image_size=96, seed=0)["coco"]


@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory):
    """The same kind of set in the VOC layout (``VOCdevkit/VOC2012``, image sets train / val)."""
    from yolo_common.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("shapes_voc")
    return make_synthetic(out, layouts=("voc",), num_train=16, num_val=4, image_size=96, seed=0)["voc"]



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


TINY = ["num_classes", "3", "input_size", "64,64", "test_size", "64,64", "random_size", "2,3",
        "data_num_workers", "0", "print_interval", "1", "warmup_epochs", "1", "no_aug_epochs", "0"]


def _run_train(tmp_path, extra, opts, name="run", in_process=True):
    argv = ["--name", "yolox-nano", "--device", "cpu", "--threads", "1",
           "--synthetic", "--synthetic-images", "16", "--synthetic-size", "64", "-expn", name, *extra,
           *TINY, "output_dir", str(tmp_path), *opts]
    if in_process:   # saves an interpreter + torch import per run
        from yolox_gaudi.train import main

        assert main(argv) == 0
    else:
        r = subprocess.run([sys.executable, "-m", "yolox_gaudi.train", *argv], capture_output=True, text=True,
                           timeout=400)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp_path / name


_run_train.tiny = TINY     # the overrides, for tests that build their own command line


@pytest.fixture
def train():
    """``train(tmp_path, extra_flags, overrides, name="run", in_process=True)`` -> the run folder: YOLOX-Nano
    on 16 synthetic 64 px images through the real CLI."""
    return _run_train
