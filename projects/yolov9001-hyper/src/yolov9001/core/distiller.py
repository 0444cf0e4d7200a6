"""``Distiller``: the trainer's side of DINOv3 distillation (``cfg.dino``): when the teacher runs, what the
loss gets, the student-side head, and the backbone LR gate.

- Teacher schedule: built lazily on the first step (or before it with ``prewarm``), run every ``every_n``
  steps. In between, its last outputs are reused only if the batch holds the very same samples (same epoch,
  same indices: augmentation is a function of both); otherwise the step has no DINO terms and is counted in
  ``dino/skipped_steps``. After ``max_epochs`` epochs the teacher is unloaded and every term stops.
- Student features: a forward hook on the last ``HyperComputeModule`` (the hypergraph level, stride 16)
  keeps its output for the feature-distillation and region-contrast terms.
- ``DistillHead``: its projections train with the model in their own optimizer groups (decay / bias), its
  class prototypes are running means (buffers). Under DDP the head is outside the DDP module: every
  rank all-reduces every head gradient (zeros where a rank had none, so the collectives always line up)
  and ``check_synced`` compares the head across ranks after each epoch. Saved in checkpoints as
  ``distill`` (head, share, skipped steps); the teacher's weights are never saved.
- ``bb_lr_gate``: ``share`` = EMA (0.9) of DINO loss / total loss (0 on steps without DINO terms); the
  backbone groups' LR is multiplied by ``max(bb_lr_gate_min, 1 - share)``: the more of the gradient comes
  from imitating the teacher, the slower the shared backbone moves, so the detection terms keep their say
  in it (a ratio in [min, 1], logged as ``dino/bb_lr_gate``). Once the teacher is unloaded the gate is 1.
"""

from __future__ import annotations

import logging

import torch

from ..utils.dino_teacher import DINOTeacher, DinoOutput, load_config
from ..utils.distill import DinoBatch, DistillHead
from .ema import unwrap

log = logging.getLogger("yolov9001.dino")


def teacher_width(cfg) -> int:
    """The teacher's hidden size, from its config alone (no weights are loaded)."""
    return int(load_config(cfg.dino.model_name, cfg.dino.hf_token).hidden_size)


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

    def end_epoch(self, epoch: int, optimizer=None) -> None:
        """After epoch ``epoch`` (0-based): once ``max_epochs`` epochs are done, unload the teacher, drop the
        feature hook and open the LR gate (no DINO term is left to share the loss)."""
        if epoch + 1 < self.d.max_epochs:
            return
        self.teacher.unload()
        self._cache = None
        if self._hook is not None:
            self._hook.remove()
            self._hook, self._student_map = None, None
        self.share, self.gate = 0.0, 1.0
        for g in (optimizer.param_groups if optimizer is not None else []):
            g.pop("gate", None)

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
        frac = min(max(dino_total / total, 0.0), 1.0) if dino_total is not None and total > 0 else 0.0
        self.share = 0.9 * self.share + 0.1 * frac     # a step without DINO terms had share 0
        if self.d.bb_lr_gate:
            self.gate = max(self.d.bb_lr_gate_min, 1.0 - self.share)
            for g in optimizer.param_groups:
                if str(g.get("name", "")).startswith("backbone."):
                    g["gate"] = self.gate
        return {"dino/share": self.share, "dino/bb_lr_gate": self.gate, "dino/skipped_steps": self.skipped_steps,
                "dino/teacher_loaded": float(self.teacher.loaded)}

    def param_groups(self, cfg, weight_decay: float) -> list[dict]:
        """The head's trainable parameters: weights with decay, biases without (as the model's groups)."""
        if self.head is None:
            return []
        groups = []
        for kind, wd in (("decay", weight_decay), ("bias", 0.0)):
            params = [p for n, p in self.head.named_parameters() if n.endswith("bias") == (kind == "bias")]
            if params:
                groups.append({"params": params, "name": f"distill.{kind}", "kind": kind, "weight_decay": wd,
                               "lr_scale": cfg["head_lr_scale"], "lr": cfg["lr0"] * cfg["head_lr_scale"]})
        return groups

    # ---- DDP ----
    def sync_grads(self) -> None:
        """Averages every head gradient over ranks; a rank whose steps had no term for a parameter sends
        zeros (skipping it would leave the ranks' collectives out of step: a hang)."""
        if self.head is None:
            return
        from yolo_common.distributed import all_reduce_mean

        for p in self.head.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(all_reduce_mean(p.grad))

    def check_synced(self) -> None:
        """Raises if the head differs between ranks (its gradient sync or prototype reduction broke)."""
        if self.head is None:
            return
        import torch.distributed as dist

        flat = torch.cat([t.detach().float().flatten() for t in self.head.state_dict().values()])
        lo, hi = flat.clone(), flat.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if not torch.equal(lo, hi):
            raise RuntimeError(f"the DINO distillation head differs between ranks (max |diff| "
                               f"{float((hi - lo).abs().max()):.3g}); its gradient sync is broken")

    # ---- checkpoints ----
    def state_dict(self) -> dict:
        return {"head": self.head.state_dict() if self.head is not None else None, "share": self.share,
                "gate": self.gate, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        if self.head is not None and state.get("head") is not None:
            self.head.load_state_dict(state["head"])
        self.share, self.gate = float(state.get("share", 0.0)), float(state.get("gate", 1.0))
        self.skipped_steps = int(state.get("skipped_steps", 0))

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
        self.teacher.unload()
