"""Checkpoints that load without unpickling code, and the gate in front of the ones that cannot.

An ultralytics ``.pt`` is a pickled ``nn.Module``: ``torch.load(weights_only=False)`` (what ultralytics'
loaders do) runs whatever the file says, and ultralytics' loader may even download or pip-install modules
it names. So every ``weights/<name>.pt`` this package writes gets, in the same step:

- ``weights/<name>.safe.pt``: **plain data only** (tensors, str, int, dict, list), read back with
  ``torch.load(weights_only=True)``: the model YAML dict, class names, the EMA's fp32 state dict, the
  QAT scheme and ``{layer: bits}`` map, the epoch and the training arguments. Export, evaluation and the
  QAT final validation rebuild the model from this file (``load_safe_model``); no pickle is opened.
- an entry in ``weights/checksums.json``: the ``.pt``'s sha256, and ``finished`` once ultralytics has
  stripped it after the last epoch.

Ultralytics' own ``--resume`` still needs the pickle (optimizer, scaler, its trainer state). It is opened
only when its sha256 is the one this package recorded when writing it (the run's own file, byte for byte),
or when the user passes ``--trust-checkpoint`` (``trust=True``), which warns. Anything else raises
:class:`UntrustedCheckpoint` naming the file and the flag.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from yolo_common.checkpoint import atomic_write_bytes, atomic_write_json

SAFE_FORMAT = "yolov10-qat/safe-1"
CHECKSUMS = "checksums.json"


class UntrustedCheckpoint(RuntimeError):
    """A pickled checkpoint this package did not write (or that changed since); the message says what to do."""


def safe_path(pt: str | Path) -> Path:
    """``weights/best.pt`` -> ``weights/best.safe.pt``."""
    pt = Path(pt)
    return pt.with_name(pt.stem + ".safe.pt")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checksums(directory: Path) -> dict:
    p = directory / CHECKSUMS
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # unreadable record: nothing is trusted, --trust-checkpoint still works


def record(pt: str | Path, *, finished: bool = False) -> None:
    """Records ``pt``'s current sha256 (call right after writing it)."""
    pt = Path(pt)
    sums = _checksums(pt.parent)
    sums[pt.name] = {"sha256": sha256(pt), "finished": bool(finished)}
    atomic_write_json(pt.parent / CHECKSUMS, sums)


def recorded(pt: str | Path) -> dict | None:
    """The record of ``pt`` if its bytes are still the ones recorded, else ``None``."""
    pt = Path(pt)
    entry = _checksums(pt.parent).get(pt.name)
    if not entry or not pt.is_file() or entry.get("sha256") != sha256(pt):
        return None
    return entry


def write_safe(pt: str | Path, state: dict[str, Any]) -> Path:
    """Atomically writes ``state`` (plain data, see the module docstring) as ``pt``'s ``.safe.pt``."""
    import io

    buf = io.BytesIO()
    torch.save({"format": SAFE_FORMAT, **state}, buf)
    return atomic_write_bytes(safe_path(pt), buf.getvalue())


def read_safe(pt: str | Path) -> dict | None:
    """``pt``'s ``.safe.pt`` loaded with ``weights_only=True``; ``None`` when there is none."""
    p = safe_path(pt)
    if not p.is_file():
        return None
    state = torch.load(p, map_location="cpu", weights_only=True)
    if state.get("format") != SAFE_FORMAT:
        raise ValueError(f"{p}: not a {SAFE_FORMAT} file (format {state.get('format')!r})")
    return state


def check_pickle_allowed(pt: str | Path, trust: bool) -> None:
    """Raises :class:`UntrustedCheckpoint` unless ``pt`` is this run's own file or ``trust`` is set."""
    pt = Path(pt)
    if recorded(pt) is not None:
        return
    if trust:
        warnings.warn(f"--trust-checkpoint: unpickling {pt}, which this package did not record writing; "
                      f"a malicious .pt can run code (and ultralytics may install packages it names)",
                      RuntimeWarning, stacklevel=2)
        return
    raise UntrustedCheckpoint(
        f"{pt} is a pickled checkpoint that this run did not write (no matching sha256 in "
        f"{pt.parent / CHECKSUMS}); unpickling it can run arbitrary code. Pass --trust-checkpoint "
        f"(trust=True) only if you trust where it came from.")


def load_pickle(pt: str | Path, *, trust: bool = False) -> dict:
    """The ultralytics checkpoint dict, behind :func:`check_pickle_allowed`."""
    check_pickle_allowed(pt, trust)
    from ._env import ultralytics_env

    ultralytics_env()
    from ultralytics.nn.tasks import torch_safe_load

    ckpt, _ = torch_safe_load(str(pt))
    return ckpt


def safe_state_of(ema: torch.nn.Module, *, kind: str, epoch: int, train_args: dict, qat: dict | None) -> dict:
    """What ``write_safe`` stores for an EMA model (``qat``: ``{"scheme", "layers"}`` or ``None``)."""
    from yolo_common.runlog import to_jsonable

    return {
        "kind": kind,
        "epoch": int(epoch),
        "yaml": json.loads(json.dumps(to_jsonable(ema.yaml))),   # plain dict, as the YAML file read
        "names": {int(k): str(v) for k, v in dict(getattr(ema, "names", {}) or {}).items()},
        "train_args": json.loads(json.dumps(to_jsonable(train_args))),
        "ema_fp32": {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype, copy=True)
                     for k, v in ema.state_dict().items()},
        "qat": qat,
        # runtime head switches that are not in the state dict (the validator sets end2end = not nms)
        "head": {k: getattr(ema.model[-1], k) for k in ("end2end", "max_det")
                 if isinstance(getattr(ema.model[-1], k, None), (bool, int))},
    }


def build_model(state: dict) -> torch.nn.Module:
    """The fp32 (quantized when ``state["qat"]``) model of a ``.safe.pt`` state, in eval mode."""
    from copy import deepcopy

    from ._env import ultralytics_env

    ultralytics_env()
    from ultralytics.nn.tasks import DetectionModel

    from .quant import quantize_model

    cfg = deepcopy(state["yaml"])
    model = DetectionModel(cfg, ch=int(cfg.get("channels", 3)), nc=int(cfg["nc"]), verbose=False)
    if state.get("qat"):
        quantize_model(model, state["qat"]["layers"])
    model.load_state_dict(state["ema_fp32"])
    for k, v in state.get("head", {}).items():
        setattr(model.model[-1], k, v)
    model.names = dict(state["names"])
    model.args = dict(state["train_args"])
    model.task = "detect"
    return model.eval()
