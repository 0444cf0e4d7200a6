"""Building the two trainers (classes in ``trainers.py``), their logging, and loading their checkpoints.

Both train with ultralytics' own loop (loss, augmentation, warmup, EMA, validation, ``best.pt``/``last.pt``),
from the model YAML with random init, NMS-free (``nms=False``: the one-to-one head is what validation scores
and what gets exported). On top of ultralytics they log through ``yolo_common.runlog.RunLogger`` into the
model's folder: ``config.json``, ``logs/train.jsonl`` (one line per step) + ``logs/eval.jsonl`` (per epoch),
``tb/`` TensorBoard events and ``curves/loss.csv`` + ``loss.png``.

``trainers.QATDetectionTrainer`` changes four hooks and nothing else (no ultralytics module is patched):

- ``get_model``: build the float model, then swap its convs for Brevitas ``QuantConv2d`` (``quant.py``) before
  ``_setup_train`` creates the EMA and the optimizer, so both see the quantized layers;
- ``save_model``: Brevitas layers cannot be pickled, so the checkpoint holds the EMA *stripped* to plain convs
  (fp16, as ultralytics stores it: ``load_checkpoint``/``AutoBackend`` still open it, as a float model) plus a
  ``brevitas_qat`` entry: scheme, ``{layer: bits}`` and the EMA's **fp32** state dict (re-rounding latent
  weights through fp16 flips ~1e-3 of the int4 codes, so resume, validation and export use the fp32 copy);
- ``setup_model`` / ``_load_checkpoint_state``: on resume, re-quantize and load the fp32 weights and EMA;
- ``final_eval``: validate ``best.pt`` reloaded as the quantized model (not the stripped float one).

Both trainers write a plain-data ``<name>.safe.pt`` next to every ``<name>.pt`` and record the ``.pt``'s
sha256 (``safe_ckpt``): export and evaluation load the ``.safe.pt`` with ``weights_only=True``, and a
pickle is opened only for ultralytics' resume of the run's own file or with ``--trust-checkpoint``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from . import safe_ckpt

QAT_KEY = "brevitas_qat"  # not "modelopt": ultralytics' load_checkpoint would try to restore that with ModelOpt


def ultralytics_device(device: str) -> str:
    """``auto|cpu|cuda|cuda:N`` -> ultralytics' device string (``cpu``, ``0``, ``N``)."""
    d = str(device).strip().lower()
    if d == "auto":
        return "0" if torch.cuda.is_available() else "cpu"
    if d == "cpu":
        return "cpu"
    if d == "cuda":
        return "0"
    if d.startswith("cuda:"):
        return d.split(":", 1)[1]
    raise ValueError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N")


def trainer_overrides(cfg, dataset_yaml: str | Path, save_dir: str | Path) -> dict:
    """The ultralytics arguments of one training: the recipe's ``train_args`` + the run's size knobs.

    Set explicitly because 8.4.190's defaults are not the YOLOv10 recipe: ``optimizer`` (auto would pick
    MuSGD/AdamW) comes from the recipe, ``nms=False`` makes validation use the one-to-one head, ``plots=False``
    avoids the font download, ``pretrained=False`` keeps it from scratch.
    """
    return {
        **cfg.train_args,
        "model": cfg.model,
        "data": str(dataset_yaml),
        "epochs": cfg.epochs,
        "imgsz": cfg.imgsz,
        "batch": cfg.batch,
        "workers": cfg.workers,
        "device": ultralytics_device(cfg.device),
        "seed": cfg.seed,
        "deterministic": cfg.deterministic,
        "amp": bool(cfg.amp),
        "pretrained": False,
        "nms": False,
        "plots": False,
        "save_period": cfg.save_period,
        "save_dir": str(save_dir),
        "exist_ok": True,
        "verbose": True,
        "val": True,
    }


# ----------------------------------------------------------------------------------------------
# Logging bridge: ultralytics callbacks -> yolo_common.runlog.RunLogger


class _RunLogBridge:
    """Per-step train losses and per-epoch validation metrics into a ``RunLogger`` rooted at ``save_dir``.

    Steps count optimizer batches done (1-based); the validation after epoch ``e`` is logged at step
    ``(e + 1) * nb``. The logger opens at ``on_train_start``, when a resume's start epoch is known: a run
    resumed at epoch ``E`` trims the killed run's records from step ``E * nb + 1`` on (JSONL and
    TensorBoard ``purge_step``), so every step appears once.
    """

    def __init__(self, root: Path, config: dict):
        self.root, self.config = root, config
        self.log = None
        self._skipped: dict[str, int] = {}
        self.batch_in_epoch = 0
        self.t_epoch = time.time()

    def attach(self, trainer) -> None:
        trainer.add_callback("on_train_start", self.on_train_start)
        trainer.add_callback("on_train_epoch_start", self.on_train_epoch_start)
        trainer.add_callback("on_train_batch_end", self.on_train_batch_end)
        trainer.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)
        trainer.add_callback("teardown", self.teardown)

    def on_train_start(self, trainer) -> None:
        from yolo_common.runlog import RunLogger

        start = int(getattr(trainer, "start_epoch", 0) or 0)
        resume_step = start * len(trainer.train_loader) + 1 if start > 0 else None
        self.log = RunLogger(self.root, self.config, rank=0, resume_step=resume_step)

    def on_train_epoch_start(self, trainer) -> None:
        self.batch_in_epoch = 0
        self.t_epoch = time.time()

    def on_train_batch_end(self, trainer) -> None:
        nb = len(trainer.train_loader)
        self.batch_in_epoch += 1
        step = trainer.epoch * nb + self.batch_in_epoch
        items = trainer.loss_items or {}
        scalars = {f"loss/{k}": float(v) for k, v in items.items()}
        scalars["loss/total"] = float(sum(scalars.values())) if scalars else float(trainer.loss)
        scalars["lr"] = float(trainer.optimizer.param_groups[0]["lr"])
        self.log.log_train(step, trainer.epoch + self.batch_in_epoch / nb, **scalars)

    def on_fit_epoch_end(self, trainer) -> None:
        if self.log is None:
            return
        nb = len(trainer.train_loader) if getattr(trainer, "train_loader", None) else 1
        metrics = {str(k).replace("(B)", ""): float(v) for k, v in (trainer.metrics or {}).items()
                   if isinstance(v, (int, float)) or (hasattr(v, "ndim") and v.ndim == 0)}
        metrics["epoch_time_s"] = time.time() - self.t_epoch
        for name, loader in (("train", getattr(trainer, "train_loader", None)),
                             ("val", getattr(trainer, "test_loader", None))):
            total = getattr(getattr(loader, "dataset", None), "skipped", 0)   # counts over the whole run
            skipped = total - self._skipped.get(name, 0)                     # this epoch's
            self._skipped[name] = total
            metrics[f"unreadable_{name}_images"] = skipped
            if skipped:
                print(f"[yolov10-qat] epoch {trainer.epoch + 1}: {skipped} unreadable {name} image loads "
                      f"skipped (named in the warnings above)", flush=True)
        self.log.log_eval((trainer.epoch + 1) * nb, trainer.epoch + 1, **metrics)

    def teardown(self, trainer) -> None:
        if self.log is not None:
            self.log.close()  # writes curves/loss.csv + loss.png


# ----------------------------------------------------------------------------------------------
# Trainers


def _detection_trainer_cls():
    from .trainers import RobustDetectionTrainer

    return RobustDetectionTrainer


def build_trainer(kind: str, cfg, dataset_yaml: str | Path, save_dir: str | Path, *, resume: str | Path | None = None,
                  log_config: dict | None = None, trust: bool = False):
    """A ready-to-``train()`` trainer for ``kind`` ``"fp16"`` or ``"qat"``, logging into ``save_dir``.

    Args:
        kind: ``"fp16"`` (ultralytics ``DetectionTrainer``) or ``"qat"`` (:class:`QATDetectionTrainer`).
        cfg: the resolved :class:`~yolov10_qat.config.RunConfig`.
        dataset_yaml: the run's YOLO data.yaml.
        save_dir: the model folder (``<run-root>/fp16`` or ``<run-root>/qat-w4a16``).
        resume: a ``last.pt`` to resume from (ultralytics' resume: args come from the checkpoint).
        log_config: what to write as ``config.json`` (default: ``cfg.to_dict()``).
        trust: allow resuming from a pickle this package did not record writing (``--trust-checkpoint``).
    """
    from ._env import ultralytics_env

    save_dir = Path(save_dir).resolve()
    from yolo_common.checkpoint import sweep_stale_temps

    sweep_stale_temps(save_dir / "weights")   # temp files of writes a kill interrupted (one owner: us)
    ultralytics_env(save_dir.parent / ".ultralytics")
    overrides = trainer_overrides(cfg, dataset_yaml, save_dir)
    if resume is not None:
        safe_ckpt.check_pickle_allowed(resume, trust)   # ultralytics' resume unpickles the file
        # Resume takes every argument from the checkpoint; only where to save and the device may change.
        overrides = {"resume": str(resume), "save_dir": str(save_dir), "device": overrides["device"],
                     "workers": cfg.workers, "data": str(dataset_yaml)}
    if kind == "fp16":
        trainer = _detection_trainer_cls()(overrides=overrides)
    elif kind == "qat":
        trainer = make_qat_trainer_cls()(overrides=overrides, scheme=cfg.scheme)
    else:
        raise ValueError(f"kind must be fp16 or qat, got {kind!r}")
    config = dict(log_config or cfg.to_dict(), kind=kind, ultralytics_args=overrides)
    _RunLogBridge(save_dir, config).attach(trainer)
    return trainer


def make_qat_trainer_cls():
    """The QAT trainer class (``trainers.QATDetectionTrainer``; importing it imports ultralytics)."""
    from .trainers import QATDetectionTrainer

    return QATDetectionTrainer


# ----------------------------------------------------------------------------------------------
# Loading checkpoints


def load_qat_checkpoint(path: str | Path, *, trust: bool = False):
    """A QAT checkpoint as the quantized fp32 model, in eval mode.

    Reads ``<path stem>.safe.pt`` (plain data, ``weights_only=True``: no code can run); only a checkpoint
    without one falls back to unpickling ``path``, which ``safe_ckpt.check_pickle_allowed`` gates.

    Returns:
        ``(model, ckpt)``: the ``DetectionModel`` with Brevitas layers re-applied and the fp32 EMA weights;
        ``ckpt`` has ``epoch``, ``train_args`` and the ``brevitas_qat`` entry (scheme, layers, ema_fp32).

    Raises:
        ValueError: the checkpoint is not a QAT checkpoint of this package.
        safe_ckpt.UntrustedCheckpoint: no ``.safe.pt`` and a pickle this run did not write (see ``trust``).
    """
    from .quant import quantize_model

    state = safe_ckpt.read_safe(path)
    if state is not None:
        if not state.get("qat"):
            raise ValueError(f"{path} is a {state['kind']} checkpoint, not a yolov10-qat QAT checkpoint")
        model = safe_ckpt.build_model(state)
        ckpt = {"epoch": state["epoch"], "train_args": state["train_args"],
                QAT_KEY: {**state["qat"], "ema_fp32": state["ema_fp32"]}}
    else:
        ckpt = safe_ckpt.load_pickle(path, trust=trust)
        qat = ckpt.get(QAT_KEY)
        if not qat:
            raise ValueError(f"{path} is not a yolov10-qat QAT checkpoint (no '{QAT_KEY}' entry)")
        model = (ckpt.get("ema") or ckpt["model"]).float()
        quantize_model(model, qat["layers"])
        model.load_state_dict(qat["ema_fp32"])
        model.args = {**ckpt.get("train_args", {})}
        model.task = "detect"
    model.pt_path = str(path)
    return model.eval(), ckpt


def load_float_checkpoint(path: str | Path, *, trust: bool = False):
    """A baseline checkpoint as the fp32 model, in eval mode: ``(model, ckpt)`` (``.safe.pt`` first, as
    :func:`load_qat_checkpoint`; its fp32 EMA is the exact training state, the pickle's is fp16)."""
    state = safe_ckpt.read_safe(path)
    if state is not None:
        if state.get("qat"):
            raise ValueError(f"{path} is a QAT checkpoint; load it with load_qat_checkpoint")
        model = safe_ckpt.build_model(state)
        return model, {"epoch": state["epoch"], "train_args": state["train_args"]}
    ckpt = safe_ckpt.load_pickle(path, trust=trust)
    model = (ckpt.get("ema") or ckpt["model"]).float()
    return model.eval(), ckpt
