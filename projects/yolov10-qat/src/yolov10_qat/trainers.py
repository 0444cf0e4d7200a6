"""The two ultralytics trainer classes, at module level (so ultralytics' DDP launcher can import them by name).

Importing this module imports ultralytics: ``trainer.build_trainer`` does it after ``ultralytics_env()``.

- :class:`RobustDetectionTrainer` (the fp16 baseline) is ultralytics' ``DetectionTrainer`` plus two things:
  its datasets go in ``yolo_common.data.SkipUnreadable`` (an image that does not decode is logged, counted
  and replaced in training, dropped from its batch in validation, instead of ending the epoch), and every
  checkpoint it writes gets its plain-data twin and sha256 record (``safe_ckpt``).
- :class:`QATDetectionTrainer` trains the Brevitas W4A16 model (see ``trainer``'s module docstring).
"""

from __future__ import annotations

import io
import time
from copy import deepcopy

import torch
from ultralytics.cfg import DEFAULT_CFG
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import LOGGER, RANK, __version__
from ultralytics.utils.torch_utils import convert_optimizer_state_dict_to_fp16, strip_optimizer, unwrap_model
from yolo_common.checkpoint import atomic_write_bytes
from yolo_common.data import SkipUnreadable

from . import safe_ckpt
from .quant import layer_bits, quantize_model, quantized_layers, strip_quant
from .trainer import QAT_KEY, load_qat_checkpoint


class RobustDetectionTrainer(DetectionTrainer):
    """ultralytics ``DetectionTrainer`` + unreadable-image skipping + safe checkpoint twins."""

    kind = "fp16"

    def build_dataset(self, img_path, mode="train", batch=None):
        # Validation must not score an image twice, so there a bad image is dropped, not replaced.
        ds = super().build_dataset(img_path, mode, batch)
        return SkipUnreadable(ds, mode="replace" if mode == "train" else "drop")

    def _qat_state(self) -> dict | None:
        return None

    def _written(self) -> list:
        """The files ``save_model`` just wrote (ultralytics' own conditions)."""
        out = [self.last]
        if self.best_fitness == self.fitness:
            out.append(self.best)
        if self.save_period > 0 and self.epoch % self.save_period == 0:
            out.append(self.wdir / f"epoch{self.epoch}.pt")
        return out

    def _record_saved(self) -> None:
        """Plain-data twin + sha256 of each file just written (the EMA is fp32 here: no fp16 rounding)."""
        state = safe_ckpt.safe_state_of(self.ema.ema, kind=self.kind, epoch=self.epoch,
                                        train_args=vars(self.args), qat=self._qat_state())
        for f in self._written():
            safe_ckpt.write_safe(f, state)
            safe_ckpt.record(f)

    def save_model(self):
        saved = super().save_model()
        self._record_saved()
        return saved

    def _record_finished(self) -> None:
        # final_eval's strip_optimizer rewrote last/best: record the new bytes (the twins still hold the
        # same EMA weights, in fp32)
        for f in (self.last, self.best):
            if f.exists() and safe_ckpt.safe_path(f).exists():
                safe_ckpt.record(f, finished=True)

    def final_eval(self):
        super().final_eval()
        self._record_finished()


class QATDetectionTrainer(RobustDetectionTrainer):
    """ultralytics ``DetectionTrainer`` training a Brevitas W4A16 model (see ``trainer``'s docstring)."""

    kind = "qat"

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None, scheme: str = "w4"):
        self.scheme = scheme
        self.qat_layers: dict[str, int] = {}
        super().__init__(cfg, overrides, _callbacks)

    def _qat_state(self) -> dict | None:
        return {"scheme": self.scheme, "layers": dict(self.qat_layers)}

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
        for f in self._written():
            atomic_write_bytes(f, data)
        self._record_saved()
        return True

    def final_eval(self):
        if RANK in {-1, 0}:
            ckpt = strip_optimizer(self.last) if self.last.exists() else {}
            if self.best.exists():
                strip_optimizer(self.best, updates={"train_results": ckpt.get("train_results")})
            self._record_finished()
        if self.best.exists():
            LOGGER.info(f"\nValidating {self.best} (reloaded as the quantized model from its .safe.pt)...")
            model, _ = load_qat_checkpoint(self.best)
            assert quantized_layers(model) == self.qat_layers
            self.validator.args.plots = self.args.plots
            self.validator.args.compile = False
            self.metrics = self.validator(model=model)
            self.metrics.pop("fitness", None)
            self.epoch += 1
            self.run_callbacks("on_fit_epoch_end")
            self.epoch -= 1
