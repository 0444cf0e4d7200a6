"""Checkpoints through accelerate, and the backbone file that links pretraining to detection.

A checkpoint is what ``accelerator.save_state(dir)`` writes (accelerate >= 0.2x: ``model.safetensors``,
``optimizer.bin``, ``random_states_0.pkl``...) plus our ``meta.json`` (epoch, step, seed, config,
and for pretraining the class order). ``<run>/checkpoints/epoch_NNNN/``; the newest ``keep`` are kept.

The backbone file is plain safetensors (no pickle: loading it cannot run code) with the model options
in its metadata, so a detector with a different ``width``/``batch_norm`` gets a clear error instead of a
wall of shape mismatches. ``extract_backbone`` reads what accelerate actually writes
(``model.safetensors``; the starting code looked for ``pytorch_model.bin`` and broke).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from yolo_common.checkpoint import atomic_write_json, sweep_stale_temps

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
BACKBONE_FILE = "backbone.safetensors"
# Prefixes wrappers add to state-dict keys: torch.compile (_orig_mod.) and DDP (module.).
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """The complete ``epoch_NNNN`` checkpoint folders of a run (``meta.json`` written), oldest first.

    A folder a kill interrupted (no ``meta.json``) is not a checkpoint: resuming from it would read no
    epoch and silently start the run over.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith("epoch_")
                  and (d / MODEL_FILE).is_file() and (d / META_FILE).is_file())


def _partial_dirs(run_dir: Path, writing: Path) -> list[Path]:
    """``epoch_*`` folders without ``meta.json`` (a save that was killed), except the one being written."""
    root = run_dir / "checkpoints"
    return [d for d in root.iterdir() if d.is_dir() and d.name.startswith("epoch_") and d != writing
            and not (d / META_FILE).is_file()]


def save_checkpoint(accelerator, run_dir: str | Path, epoch: int, meta: dict[str, Any], keep: int = 2) -> Path:
    """``accelerator.save_state`` to ``<run>/checkpoints/epoch_NNNN`` + ``meta.json``; prunes old ones.

    Call on every process (accelerate writes from the main one). A crash mid-save leaves a folder
    without ``meta.json``, which ``checkpoint_dirs`` (so resume and ``extract_backbone``) ignore, and
    the previous one intact; the next save removes such leftovers (each is a full model's size).
    """
    out = Path(run_dir) / "checkpoints" / f"epoch_{epoch:04d}"
    accelerator.save_state(str(out), safe_serialization=True)
    accelerator.wait_for_everyone()   # every rank's RNG file is written before meta.json marks it complete
    if accelerator.is_main_process:
        # meta.json appears (temp + fsync + rename) only once the state is fully written
        atomic_write_json(out / META_FILE, {"epoch": epoch, **meta})
        for stale in _partial_dirs(Path(run_dir), out):
            shutil.rmtree(stale, ignore_errors=True)
        sweep_stale_temps(Path(run_dir) / "eval")     # a kill during an atomic metrics.json write
        if keep > 0:
            for old in checkpoint_dirs(run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return out


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint folder, a run folder (its newest checkpoint) or a model file.

    Raises:
        FileNotFoundError: nothing usable there (the message says what was looked for).
    """
    path = Path(path)
    if path.is_file():
        return path.parent
    if (path / MODEL_FILE).is_file():
        return path
    dirs = checkpoint_dirs(path)
    if dirs:
        return dirs[-1]
    raise FileNotFoundError(f"no checkpoint at {path}: expected a folder with {MODEL_FILE} (what "
                            f"accelerator.save_state writes) or a run folder with checkpoints/epoch_*/")


def read_meta(ckpt_dir: str | Path) -> dict:
    """``meta.json`` of a checkpoint folder ({} if it has none)."""
    p = Path(ckpt_dir) / META_FILE
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Removes ``_orig_mod.`` / ``module.`` key prefixes left by torch.compile / DDP."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in _WRAPPER_PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def extract_backbone(pretrained: str | Path, out: str | Path | None = None) -> Path:
    """Writes the backbone weights of a pretraining checkpoint to a standalone safetensors file.

    Args:
        pretrained: a checkpoint folder (with ``model.safetensors``), its run folder (newest checkpoint)
            or the ``model.safetensors`` file itself.
        out: output file; default ``<checkpoint>/backbone.safetensors``.

    Returns:
        The file written. Its metadata holds ``width``, ``batch_norm``, the class order and the source.

    Raises:
        FileNotFoundError: no checkpoint found. ValueError: the file has no ``backbone.*`` tensors.
    """
    from safetensors.torch import load_file, save_file

    src = Path(pretrained)
    model_file = src if src.is_file() else resolve_checkpoint(src) / MODEL_FILE
    ckpt = model_file.parent
    state = strip_wrappers(load_file(str(model_file)))
    backbone = {k[len("backbone."):]: v.contiguous() for k, v in state.items() if k.startswith("backbone.")}
    if not backbone:
        raise ValueError(f"{model_file} has no 'backbone.*' tensors (keys: {sorted(state)[:5]}...); "
                         f"is it a yolov1.pretrain_train checkpoint?")
    meta = read_meta(ckpt)
    cfg = meta.get("config", {})
    metadata = {
        "format": "yolov1-backbone",
        "width": str(cfg.get("width", "")),
        "batch_norm": str(cfg.get("batch_norm", "")),
        "classes": json.dumps(meta.get("classes", {})),
        "source": str(model_file.resolve()),
        "epoch": str(meta.get("epoch", "")),
    }
    out = Path(out) if out is not None else ckpt / BACKBONE_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(backbone, str(tmp), metadata=metadata)
    tmp.replace(out)
    return out


def load_backbone(model: torch.nn.Module, path: str | Path, *, width: float | None = None,
                  batch_norm: bool | None = None) -> dict:
    """Loads a ``backbone.safetensors`` into ``model.backbone`` (strict: every tensor must match).

    Args:
        model: a ``YoloV1`` or ``YoloClassifier``.
        path: the file from ``extract_backbone``.
        width, batch_norm: the detector's options, checked against the file's metadata first.

    Returns:
        The file's metadata.

    Raises:
        FileNotFoundError, ValueError: missing file, or options / tensor shapes that do not match.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone file {path} does not exist (make one with python -m yolov1.extract_backbone)")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if width is not None and meta.get("width") and float(meta["width"]) != float(width):
        raise ValueError(f"{path} was pretrained with width={meta['width']}, the detector has width={width}")
    if batch_norm is not None and meta.get("batch_norm") and (meta["batch_norm"] == "True") != bool(batch_norm):
        raise ValueError(f"{path} was pretrained with batch_norm={meta['batch_norm']}, "
                         f"the detector has batch_norm={batch_norm}")
    state = load_file(str(path))
    try:
        model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit this backbone: {e}") from e
    return meta
