"""The two trainers: ultralytics' ``DetectionTrainer`` for the baseline, a subclass of it for W4A16 QAT.

Both train with ultralytics' own loop (loss, augmentation, warmup, EMA, validation, ``best.pt``/``last.pt``),
from the model YAML with random init, NMS-free (``nms=False``: the one-to-one head is what validation scores
and what gets exported). On top of ultralytics they log through ``yolo_common.runlog.RunLogger`` into the
model's folder: ``config.json``, ``logs/train.jsonl`` (one line per step) + ``logs/eval.jsonl`` (per epoch),
``tb/`` TensorBoard events and ``curves/loss.csv`` + ``loss.png``.

:class:`QATDetectionTrainer` changes four hooks and nothing else (no ultralytics module is patched):

- ``get_model``: build the float model, then swap its convs for Brevitas ``QuantConv2d`` (``quant.py``) before
  ``_setup_train`` creates the EMA and the optimizer, so both see the quantized layers;
- ``save_model``: Brevitas layers cannot be pickled, so the checkpoint holds the EMA *stripped* to plain convs
  (fp16, as ultralytics stores it: ``load_checkpoint``/``AutoBackend`` still open it, as a float model) plus a
  ``brevitas_qat`` entry: scheme, ``{layer: bits}`` and the EMA's **fp32** state dict (re-rounding latent
  weights through fp16 flips ~1e-3 of the int4 codes, so resume, validation and export use the fp32 copy);
- ``setup_model`` / ``_load_checkpoint_state``: on resume, re-quantize and load the fp32 weights and EMA;
- ``final_eval``: validate ``best.pt`` reloaded as the quantized model (not the stripped float one).
"""

from __future__ import annotations

import io
import time
from copy import deepcopy
from pathlib import Path

import torch
from yolo_common.checkpoint import atomic_write_bytes

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
    """Per-step train losses and per-epoch validation metrics into a ``RunLogger`` rooted at ``save_dir``."""

    def __init__(self, root: Path, config: dict):
        from yolo_common.runlog import RunLogger

        self.log = RunLogger(root, config, rank=0)
        self.batch_in_epoch = 0
        self.t_epoch = time.time()

    def attach(self, trainer) -> None:
        trainer.add_callback("on_train_epoch_start", self.on_train_epoch_start)
        trainer.add_callback("on_train_batch_end", self.on_train_batch_end)
        trainer.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)
        trainer.add_callback("teardown", self.teardown)

    def on_train_epoch_start(self, trainer) -> None:
        self.batch_in_epoch = 0
        self.t_epoch = time.time()

    def on_train_batch_end(self, trainer) -> None:
        nb = len(trainer.train_loader)
        step = trainer.epoch * nb + self.batch_in_epoch
        self.batch_in_epoch += 1
        items = trainer.loss_items or {}
        scalars = {f"loss/{k}": float(v) for k, v in items.items()}
        scalars["loss/total"] = float(sum(scalars.values())) if scalars else float(trainer.loss)
        scalars["lr"] = float(trainer.optimizer.param_groups[0]["lr"])
        self.log.log_train(step, trainer.epoch + self.batch_in_epoch / nb, **scalars)

    def on_fit_epoch_end(self, trainer) -> None:
        nb = len(trainer.train_loader) if getattr(trainer, "train_loader", None) else 1
        metrics = {str(k).replace("(B)", ""): float(v) for k, v in (trainer.metrics or {}).items()
                   if isinstance(v, (int, float)) or (hasattr(v, "ndim") and v.ndim == 0)}
        metrics["epoch_time_s"] = time.time() - self.t_epoch
        self.log.log_eval((trainer.epoch + 1) * nb, trainer.epoch + 1, **metrics)

    def teardown(self, trainer) -> None:
        self.log.close()  # writes curves/loss.csv + loss.png


# ----------------------------------------------------------------------------------------------
# Trainers


def _detection_trainer_cls():
    from ultralytics.models.yolo.detect import DetectionTrainer

    return DetectionTrainer


def build_trainer(kind: str, cfg, dataset_yaml: str | Path, save_dir: str | Path, *, resume: str | Path | None = None,
                  log_config: dict | None = None):
    """A ready-to-``train()`` trainer for ``kind`` ``"fp16"`` or ``"qat"``, logging into ``save_dir``.

    Args:
        kind: ``"fp16"`` (ultralytics ``DetectionTrainer``) or ``"qat"`` (:class:`QATDetectionTrainer`).
        cfg: the resolved :class:`~yolov10_qat.config.RunConfig`.
        dataset_yaml: the run's YOLO data.yaml.
        save_dir: the model folder (``<run-root>/fp16`` or ``<run-root>/qat-w4a16``).
        resume: a ``last.pt`` to resume from (ultralytics' resume: args come from the checkpoint).
        log_config: what to write as ``config.json`` (default: ``cfg.to_dict()``).
    """
    from ._env import ultralytics_env

    save_dir = Path(save_dir).resolve()
    ultralytics_env(save_dir.parent / ".ultralytics")
    overrides = trainer_overrides(cfg, dataset_yaml, save_dir)
    if resume is not None:
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


_QAT_CLS = None


def make_qat_trainer_cls():
    """The QAT trainer class (built on first use so that importing this module does not import ultralytics)."""
    global _QAT_CLS
    if _QAT_CLS is not None:
        return _QAT_CLS
    from ultralytics.cfg import DEFAULT_CFG
    from ultralytics.utils import LOGGER, RANK, __version__
    from ultralytics.utils.torch_utils import convert_optimizer_state_dict_to_fp16, strip_optimizer, unwrap_model

    from .quant import layer_bits, quantize_model, quantized_layers, strip_quant

    class QATDetectionTrainer(_detection_trainer_cls()):
        """ultralytics ``DetectionTrainer`` training a Brevitas W4A16 model (see the module docstring)."""

        def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None, scheme: str = "w4"):
            self.scheme = scheme
            self.qat_layers: dict[str, int] = {}
            super().__init__(cfg, overrides, _callbacks)

        def get_model(self, cfg=None, weights=None, verbose=True):
            model = super().get_model(cfg, weights, verbose)  # float, random init (or the resume weights)
            bits = layer_bits(model, self.scheme)
            quantize_model(model, bits)
            self.qat_layers = bits
            if verbose and RANK in {-1, 0}:
                n4 = sum(b == 4 for b in bits.values())
                LOGGER.info(f"Brevitas {self.scheme}: {len(bits)} convs quantized ({n4} at 4 bit, "
                            f"{len(bits) - n4} at 8 bit), DFL kept float")
            return model

        def setup_model(self):
            ckpt = super().setup_model()
            state = (ckpt or {}).get(QAT_KEY)
            if state:  # resume: the pickled weights went through fp16; the fp32 copy is the real state
                if state["layers"] != self.qat_layers:
                    raise ValueError(f"checkpoint scheme {state['scheme']!r} quantizes other layers than "
                                     f"{self.scheme!r}; resume with the scheme the run was started with")
                self.model.load_state_dict(state["ema_fp32"])
            return ckpt

        def _load_checkpoint_state(self, ckpt):
            super()._load_checkpoint_state(ckpt)
            state = ckpt.get(QAT_KEY)
            if state and self.ema:
                self.ema.ema.load_state_dict(state["ema_fp32"])

        def save_model(self):
            ema = self.ema.ema
            # As ultralytics' save_model: a transient NaN/Inf would poison the EMA (and its fp32 copy, which
            # resume and export load), so resync each non-finite EMA tensor from the live model where finite.
            if not all(torch.isfinite(v).all() for v in ema.state_dict().values() if v.is_floating_point()):
                model_sd = unwrap_model(self.model).state_dict()
                for k, v in ema.state_dict().items():
                    if v.is_floating_point() and not torch.isfinite(v).all() and torch.isfinite(model_sd[k]).all():
                        v.copy_(model_sd[k])
            fp32 = {k: v.detach().to("cpu", copy=True) for k, v in ema.state_dict().items()}
            snap = deepcopy(ema)  # deepcopy works for Brevitas modules; pickling does not
            layers = strip_quant(snap)
            snap = snap.half().to(memory_format=torch.contiguous_format)
            if hasattr(snap, "criterion"):
                snap.criterion = None
            for v in snap.state_dict().values():
                if v.is_floating_point():
                    torch.nan_to_num_(v)
            ckpt = {
                "epoch": self.epoch,
                "best_fitness": self.best_fitness,
                "stopper": {"best_fitness": self.stopper.best_fitness, "best_epoch": self.stopper.best_epoch},
                "model": None,
                "ema": snap,
                "updates": self.ema.updates,
                "optimizer": convert_optimizer_state_dict_to_fp16(deepcopy(self.optimizer.state_dict())),
                "scaler": self.scaler.state_dict(),
                "train_args": vars(self.args),
                "train_metrics": {**self.metrics, "fitness": self.fitness},
                "train_results": self.read_results_csv(),
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "version": __version__,
                QAT_KEY: {"scheme": self.scheme, "layers": layers, "ema_fp32": fp32},
            }
            buffer = io.BytesIO()
            torch.save(ckpt, buffer)
            data = buffer.getvalue()
            self.wdir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.last, data)
            if self.best_fitness == self.fitness:
                atomic_write_bytes(self.best, data)
            if self.save_period > 0 and self.epoch % self.save_period == 0:
                atomic_write_bytes(self.wdir / f"epoch{self.epoch}.pt", data)
            return True

        def final_eval(self):
            if RANK in {-1, 0}:
                ckpt = strip_optimizer(self.last) if self.last.exists() else {}
                if self.best.exists():
                    strip_optimizer(self.best, updates={"train_results": ckpt.get("train_results")})
            if self.best.exists():
                LOGGER.info(f"\nValidating {self.best} (reloaded as the quantized model)...")
                model, _ = load_qat_checkpoint(self.best)
                assert quantized_layers(model) == self.qat_layers
                self.validator.args.plots = self.args.plots
                self.validator.args.compile = False
                self.metrics = self.validator(model=model)
                self.metrics.pop("fitness", None)
                self.epoch += 1
                self.run_callbacks("on_fit_epoch_end")
                self.epoch -= 1

    _QAT_CLS = QATDetectionTrainer
    return _QAT_CLS


# ----------------------------------------------------------------------------------------------
# Loading checkpoints


def _torch_load(path: str | Path) -> dict:
    # Ultralytics checkpoints are pickled modules (its own format), so weights_only loading cannot read them;
    # only open checkpoints you trust (the ones this run wrote).
    from ._env import ultralytics_env

    ultralytics_env()
    from ultralytics.nn.tasks import torch_safe_load

    ckpt, _ = torch_safe_load(str(path))
    return ckpt


def load_qat_checkpoint(path: str | Path):
    """A QAT checkpoint as the quantized fp32 model, in eval mode.

    Returns:
        ``(model, ckpt)``: the ``DetectionModel`` with Brevitas layers re-applied and the fp32 EMA weights.

    Raises:
        ValueError: the checkpoint is not a QAT checkpoint of this package.
    """
    from .quant import quantize_model

    ckpt = _torch_load(path)
    state = ckpt.get(QAT_KEY)
    if not state:
        raise ValueError(f"{path} is not a yolov10-qat QAT checkpoint (no '{QAT_KEY}' entry)")
    model = (ckpt.get("ema") or ckpt["model"]).float()
    quantize_model(model, state["layers"])
    model.load_state_dict(state["ema_fp32"])
    model.args = {**ckpt.get("train_args", {})}
    model.pt_path = str(path)
    model.task = "detect"
    return model.eval(), ckpt


def load_float_checkpoint(path: str | Path):
    """A baseline checkpoint as the fp32 model, in eval mode: ``(model, ckpt)``."""
    ckpt = _torch_load(path)
    model = (ckpt.get("ema") or ckpt["model"]).float()
    return model.eval(), ckpt
