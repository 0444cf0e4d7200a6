"""Device resolution, mixed precision and seeding for cuda, Gaudi (hpu) and cpu.

Every training script takes ``--device auto|cpu|cuda|cuda:N|hpu`` and ``--precision fp32|fp16|bf16``
and goes through these helpers, so the one place that knows about Habana is here (and in
``distributed``). ``habana_frameworks`` is imported only when an hpu is asked for (or probed by
``auto``): importing it initialises the Habana runtime, which costs seconds and is not installed
outside the Gaudi environment.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import warnings

import numpy as np
import torch

PRECISIONS = ("fp32", "fp16", "bf16")
_PRECISION_ALIASES = {
    "fp32": "fp32", "float32": "fp32", "32": "fp32", "full": "fp32",
    "fp16": "fp16", "float16": "fp16", "16": "fp16", "half": "fp16",
    "bf16": "bf16", "bfloat16": "bf16",
}
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_GAUDI_HINT = "see envs/gaudi/README.md for the Gaudi environment"


def _import_habana() -> None:
    """Imports the Habana PyTorch bridge, which registers the ``hpu`` device with torch."""
    try:
        import habana_frameworks.torch  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            f"device 'hpu' requested but the Habana packages (habana_frameworks) are not installed "
            f"({e}); {_GAUDI_HINT}"
        ) from e


def _resolve_hpu(spec: str) -> torch.device:
    _import_habana()
    hpu = getattr(torch, "hpu", None)
    if hpu is not None and hasattr(hpu, "is_available") and not hpu.is_available():
        raise RuntimeError(f"device {spec!r} requested: habana_frameworks is installed but no Gaudi "
                           f"device is visible; {_GAUDI_HINT}")
    return torch.device(spec)


def _resolve_cuda(spec: str) -> torch.device:
    device = torch.device(spec)
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise RuntimeError(
            f"device {spec!r} requested but no CUDA device is visible "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}, "
            f"CUDA_VISIBLE_DEVICES={visible!r}); use --device cpu or auto"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise RuntimeError(
            f"device {spec!r} requested but only {count} CUDA device(s) are visible "
            f"(valid indices 0..{count - 1})"
        )
    return device


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turns a ``--device`` string into a checked ``torch.device``.

    Args:
        spec: ``auto`` (cuda if available, else hpu if ``habana_frameworks`` imports, else cpu),
            ``cpu``, ``cuda``, ``cuda:N``, ``hpu`` or ``hpu:N``; a ``torch.device`` is checked the same.

    Returns:
        The device. ``auto``/``cuda`` give the index-less ``cuda`` (the current device, which
        ``distributed.init_distributed`` points at the local rank's GPU).

    Raises:
        RuntimeError: the requested accelerator is not there; the message says why.
        ValueError: an unknown device string.
    """
    spec = str(spec).strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        # find_spec is free; only pay for the Habana import when the package is actually present.
        if importlib.util.find_spec("habana_frameworks") is not None:
            try:
                return _resolve_hpu("hpu")
            except RuntimeError as e:
                warnings.warn(f"device auto: falling back to cpu: {e}", RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    kind = spec.split(":", 1)[0]
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        return _resolve_cuda(spec)
    if kind == "hpu":
        return _resolve_hpu(spec)
    raise ValueError(f"unknown device {spec!r}; expected auto, cpu, cuda, cuda:N or hpu")


def normalize_precision(precision: str) -> str:
    """Maps ``fp32|fp16|bf16`` and common aliases (``float16``, ``half``, ``bfloat16``...) to one name."""
    key = str(precision).strip().lower()
    if key not in _PRECISION_ALIASES:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return _PRECISION_ALIASES[key]


def autocast(device: torch.device | str, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """Mixed-precision context for the forward pass.

    ``fp32`` is a ``nullcontext`` (zero cost). ``bf16`` works on cuda, hpu and cpu. ``fp16`` works on
    cuda (pair it with ``grad_scaler``) and hpu; on cpu it is refused: CPU fp16 kernels are slow and
    there is no loss scaling there, so it only ever makes a run worse. Use bf16 or fp32 on cpu.

    Args:
        device: the device the model runs on.
        precision: ``fp32``, ``fp16`` or ``bf16`` (aliases accepted).

    Raises:
        ValueError: fp16 on cpu, or an unknown precision.
    """
    precision = normalize_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    if device_type == "cpu" and precision == "fp16":
        raise ValueError("fp16 autocast on cpu is not supported: use --precision bf16 or fp32 on cpu")
    return torch.autocast(device_type=device_type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device | str, precision: str = "fp32") -> torch.amp.GradScaler:
    """A ``GradScaler`` that is enabled only for fp16 on cuda.

    bf16 has fp32's exponent range and needs no loss scaling; a disabled scaler's ``scale``/``step``/
    ``update`` are pass-throughs, so the training loop calls them unconditionally.
    """
    precision = normalize_precision(precision)
    device_type = torch.device(device).type
    enabled = device_type == "cuda" and precision == "fp16"
    return torch.amp.GradScaler("cuda" if device_type == "cuda" else "cpu", enabled=enabled)


def seed_everything(seed: int | None = None, deterministic: bool = False) -> int:
    """Seeds python ``random``, numpy and torch (cpu and every cuda device).

    Args:
        seed: the seed, 0 <= seed < 2**32 (numpy's range). ``None`` draws one from ``os.urandom`` so
            an unseeded run is still reproducible from the recorded value.
        deterministic: also set ``cudnn.deterministic=True``, ``cudnn.benchmark=False``,
            ``torch.use_deterministic_algorithms(True, warn_only=True)`` and default
            ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (needed by deterministic cuBLAS). This costs speed
            (no cudnn autotuning, slower deterministic kernels), and the first call costs ~5 s more
            because torch imports ``torch._inductor`` inside ``use_deterministic_algorithms``.
            ``False`` leaves these settings as they are rather than resetting them.
            ``PYTHONHASHSEED`` cannot be changed from inside a running process and is not touched.

    Returns:
        The seed used; record it in the run config.
    """
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every cuda device (lazily, so free without cuda)
    if deterministic:
        # cuBLAS reads CUBLAS_WORKSPACE_CONFIG once, when CUDA initialises: setting it afterwards does
        # nothing, so say so instead of silently running non-deterministic GEMMs.
        if "CUBLAS_WORKSPACE_CONFIG" not in os.environ and torch.cuda.is_available() and torch.cuda.is_initialized():
            warnings.warn("seed_everything(deterministic=True) after CUDA was initialised: cuBLAS has already "
                          "read CUBLAS_WORKSPACE_CONFIG (unset), so GEMMs may stay non-deterministic. Call it "
                          "before any CUDA work, or export CUBLAS_WORKSPACE_CONFIG=:4096:8", RuntimeWarning,
                          stacklevel=2)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return seed
