"""``Distiller``: the trainer's side of DINOv3 distillation (``cfg.dino``): when the teacher runs, what the
loss gets, the student-side head, and the backbone LR gate.

- Teacher schedule: built lazily on the first step (or before it with ``prewarm``), run every ``every_n``
  steps. In between, its last outputs are reused only if the batch holds the very same samples (same epoch,
  same indices: augmentation is a function of both); otherwise the step has no DINO terms and is counted in
  ``dino/skipped_steps``. After ``max_epochs`` epochs the teacher is unloaded and every term stops.
- Student features: a forward hook on the last ``HyperComputeModule`` (the hypergraph level, stride 16)
  keeps its output for the feature-distillation and region-contrast terms.
- ``DistillHead`` (projections + class prototypes) trains with the model in its own optimizer group and is
  saved in checkpoints as ``distill``; the teacher's weights are never saved.
- ``bb_lr_gate``: ``share`` = EMA (0.9) of DINO loss / total loss; the backbone groups' LR is multiplied by
  ``max(bb_lr_gate_min, 1 - share)``: the more of the gradient comes from imitating the teacher, the slower
  the shared backbone moves, so the detection terms keep their say in it (a ratio in [min, 1], logged as
  ``dino/bb_lr_gate``).
"""

from __future__ import annotations

import logging

import torch

from ..utils.dino_teacher import RANDOM_CONFIGS, DINOTeacher, DinoOutput
from ..utils.distill import DinoBatch, DistillHead
from .ema import unwrap

log = logging.getLogger("yolov9001.dino")


def teacher_width(cfg) -> int:
    """The teacher's hidden size, from its config alone (no weights are loaded)."""
    d = cfg.dino
    if d.model_name in RANDOM_CONFIGS:
        return int(RANDOM_CONFIGS[d.model_name]().hidden_size)
    import os

    from transformers import AutoConfig

    from ..utils.dino_teacher import DinoLoadError, _hub_message

    token = d.hf_token or os.environ.get("HF_TOKEN") or None
    try:
        c = AutoConfig.from_pretrained(d.model_name, token=token, local_files_only=bool(os.environ.get("HF_HUB_OFFLINE")))
    except Exception as e:
        raise DinoLoadError(_hub_message(d.model_name, token, e)) from None
    return int(c.hidden_size)


class Distiller:
    def __init__(self, cfg, model: torch.nn.Module, device: torch.device):
        d = cfg.dino
        self.cfg, self.d, self.device, self.imgsz = cfg, d, device, cfg.imgsz
        self.teacher = DINOTeacher(d.model_name, device, resolution=d.resolution, quant=d.quant,
                                   hf_token=d.hf_token)
        self.head: DistillHead | None = None
        self._student_map: torch.Tensor | None = None
        self._cache: tuple[tuple, DinoOutput] | None = None
        self.skipped_steps = 0
        self.share = 0.0
        self.gate = 1.0
        hcm = unwrap(model).hyper_modules()
        # Fail fast: reading the teacher's config needs the same access (token, network or a local folder)
        # as its weights, so a gated repo without a token stops here, not at the first step.
        width = teacher_width(cfg)
        needs_student = d.feat_distill or d.contrast
        if needs_student or d.cls_proto:
            c_student = self._probe_channels(model, hcm) if needs_student else 1
            self.head = DistillHead(c_student, width, cfg.nc, feat=d.feat_distill, contrast=d.contrast).to(device)
        self._hook = hcm[-1].register_forward_hook(self._keep) if needs_student and hcm else None

    @staticmethod
    def _probe_channels(model, hcm) -> int:
        if not hcm:
            raise ValueError("dino.feat_distill/contrast need a HyperComputeModule (the stride-16 hypergraph level)")
        seen = {}

        def probe(module, inputs, output):   # returns None: a forward hook's return value replaces the output
            seen["c"] = output.shape[1]

        h = hcm[-1].register_forward_hook(probe)
        m = unwrap(model)
        was = m.training
        try:
            m.eval()
            with torch.no_grad():
                p = next(m.parameters())
                m(torch.zeros(1, 3, 64, 64, device=p.device, dtype=p.dtype))
        finally:
            m.train(was)
            h.remove()
        return int(seen["c"])

    def _keep(self, module, inputs, output) -> None:
        self._student_map = output if module.training else None   # training forwards only (not validation)

    # ---- per step ----
    def active(self, epoch: int) -> bool:
        return epoch < self.d.max_epochs

    def prewarm(self, batch_size: int = 1) -> None:
        self.teacher(torch.zeros(batch_size, 3, self.imgsz, self.imgsz, device=self.device))

    def end_epoch(self, epoch: int) -> None:
        """After epoch ``epoch`` (0-based): unload once ``max_epochs`` epochs are done."""
        if epoch + 1 >= self.d.max_epochs and self.teacher.loaded:
            self.teacher.unload()
            self._cache = None

    def batch(self, x: torch.Tensor, indices, epoch: int, step: int) -> DinoBatch | None:
        """The loss's ``dino`` argument for this step (``None``: no DINO terms this step)."""
        if not self.active(epoch):
            return None
        key = (epoch, tuple(int(i) for i in indices))
        if step % self.d.every_n == 0:
            out = self.teacher(x)
            self._cache = (key, out)
        elif self._cache is not None and self._cache[0] == key:
            out = self._cache[1]
        else:
            self.skipped_steps += 1
            return None
        return DinoBatch(out=out, student_map=self._student_map, head=self.head, imgsz=self.imgsz)

    def after_step(self, items: dict, total: float, optimizer) -> dict:
        """Updates the share EMA and the backbone LR gate; returns what to log."""
        dino_total = items.get("dino/total")
        if dino_total is not None and total > 0:
            self.share = 0.9 * self.share + 0.1 * min(max(dino_total / total, 0.0), 1.0)
        if self.d.bb_lr_gate:
            self.gate = max(self.d.bb_lr_gate_min, 1.0 - self.share)
            for g in optimizer.param_groups:
                if str(g.get("name", "")).startswith("backbone."):
                    g["gate"] = self.gate
        return {"dino/share": self.share, "dino/bb_lr_gate": self.gate, "dino/skipped_steps": self.skipped_steps,
                "dino/teacher_loaded": float(self.teacher.loaded)}

    def param_group(self, cfg, weight_decay: float) -> dict | None:
        if self.head is None or not any(p.requires_grad for p in self.head.parameters()):
            return None
        return {"params": [p for p in self.head.parameters()], "name": "distill.decay", "kind": "decay",
                "lr_scale": cfg["head_lr_scale"], "weight_decay": weight_decay, "lr": cfg["lr0"] * cfg["head_lr_scale"]}

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
        self.teacher.unload()
