import os
import random
import sys

import numpy as np
import pytest
import torch

from yolo_common import device as dev


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.fixture
def no_habana(monkeypatch):
    # None in sys.modules makes `import habana_frameworks...` raise ImportError.
    monkeypatch.setitem(sys.modules, "habana_frameworks", None)
    monkeypatch.setitem(sys.modules, "habana_frameworks.torch", None)
    monkeypatch.setattr(dev.importlib.util, "find_spec", lambda name, *a: None)


def test_cpu():
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert dev.resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_without_accelerators(no_cuda, no_habana):
    assert dev.resolve_device() == torch.device("cpu")


def test_auto_prefers_cuda(one_gpu):
    assert dev.resolve_device("auto") == torch.device("cuda")


def test_cuda_without_cuda(no_cuda):
    with pytest.raises(RuntimeError, match="no CUDA device is visible"):
        dev.resolve_device("cuda")


def test_cuda_index_out_of_range(one_gpu):
    assert dev.resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(RuntimeError, match=r"'cuda:3'.*only 1 CUDA device"):
        dev.resolve_device("cuda:3")


def test_hpu_without_habana(no_habana):
    with pytest.raises(RuntimeError, match="Habana packages") as e:
        dev.resolve_device("hpu")
    assert "envs/gaudi/README.md" in str(e.value)


def test_unknown_device():
    with pytest.raises(ValueError, match="unknown device"):
        dev.resolve_device("tpu")


def test_import_has_no_side_effects(monkeypatch):
    import importlib

    monkeypatch.delitem(sys.modules, "habana_frameworks", raising=False)
    env = dict(os.environ)
    flags = (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    importlib.reload(dev)
    assert "habana_frameworks" not in sys.modules
    assert dict(os.environ) == env
    assert (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()) == flags


def test_autocast_fp32_is_noop():
    a = torch.randn(4, 4)
    with dev.autocast("cpu", "fp32"):
        assert (a @ a).dtype == torch.float32


def test_autocast_bf16_cpu():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with dev.autocast(torch.device("cpu"), "bf16"):
        out = a @ b
    assert out.dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32  # only inside the context


def test_autocast_fp16_cpu_refused():
    with pytest.raises(ValueError, match="fp16 autocast on cpu"):
        dev.autocast("cpu", "fp16")


def test_precision_aliases():
    assert dev.normalize_precision("bfloat16") == "bf16"
    assert dev.normalize_precision("HALF") == "fp16"
    with pytest.raises(ValueError, match="unknown precision"):
        dev.normalize_precision("fp8")


def test_grad_scaler_enabled_only_for_fp16_cuda():
    assert not dev.grad_scaler("cpu", "fp32").is_enabled()
    assert not dev.grad_scaler("cpu", "bf16").is_enabled()
    assert not dev.grad_scaler("cuda", "bf16").is_enabled()
    # Disabled scaler is a pass-through.
    loss = torch.tensor(2.0)
    assert dev.grad_scaler("cpu", "fp16").scale(loss) is loss


def test_grad_scaler_fp16_cuda_enabled(one_gpu):
    # is_available is faked, so the scaler believes it has a GPU; nothing runs on it here.
    assert dev.grad_scaler("cuda:0", "fp16").is_enabled()


def test_seed_everything_reproduces():
    assert dev.seed_everything(123) == 123
    a = (torch.randn(5), np.random.rand(3), random.random())
    dev.seed_everything(123)
    b = (torch.randn(5), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    dev.seed_everything(124)
    assert not torch.equal(torch.randn(5), a[0])


def test_seed_none_returns_usable_seed():
    seed = dev.seed_everything(None)
    assert 0 <= seed < 2**32
    x = torch.randn(3)
    dev.seed_everything(seed)
    assert torch.equal(torch.randn(3), x)
    with pytest.raises(ValueError):
        dev.seed_everything(-1)


def test_seed_deterministic_sets_flags(monkeypatch):
    # The real use_deterministic_algorithms imports torch._inductor (~5 s) and flips global state
    # for the rest of the session, so record the call instead.
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own value must be kept
    dev.seed_everything(0)
    assert calls == [] and torch.backends.cudnn.benchmark  # deterministic=False leaves them alone
    dev.seed_everything(0, deterministic=True)
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert calls == [((True,), {"warn_only": True})]
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_seed_deterministic_after_cuda_init_warns(monkeypatch):
    """cuBLAS reads CUBLAS_WORKSPACE_CONFIG when CUDA initialises; setting it later is too late: say so."""
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: None)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.warns(RuntimeWarning, match="CUBLAS_WORKSPACE_CONFIG"):
        dev.seed_everything(0, deterministic=True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dev.seed_everything(0, deterministic=True)  # before CUDA init: set quietly
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
