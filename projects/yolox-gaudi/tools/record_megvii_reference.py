"""Record reference values from Megvii's own YOLOX code into ``tests/data/megvii_reference.json.gz``.

    MEGVII=$(mktemp -d)/YOLOX; DEPS=$(mktemp -d)
    git clone https://github.com/Megvii-BaseDetection/YOLOX "$MEGVII"      # commit 6ddff48 was used
    pip install --target "$DEPS" --no-deps loguru opencv-python-headless thop tabulate
    PYTHONPATH="$MEGVII:$DEPS" python tools/record_megvii_reference.py --megvii "$MEGVII"

Run once, by hand, whenever the reference should change; the tests only read the file (nothing is
downloaded or imported from Megvii at test time). What it records, each from Megvii's functions called on
inputs generated here (the inputs are stored too):

- ``lr``: ``yolox.utils.LRScheduler("yoloxwarmcos", ...).update_lr(it)`` for three schedules;
- ``ema``: ``ModelEMA``'s decay ramp and three updates of a small conv+BN model;
- ``optimizer_groups``: the parameter names of ``Exp.get_optimizer``'s three groups (nano, s);
- ``no_aug``: the epochs in which ``Trainer.before_epoch`` closes the mosaic and turns L1 on, for fresh
  and resumed runs;
- ``simota``: ``YOLOXHead.get_assignments`` (candidates, cost, IoUs, dynamic k, matches) on random cases,
  with the 0.3.0 rule (``yolo_head.py`` of tag 0.3.0) and with HEAD's rule;
- ``mixup``: ``MosaicDetection.mixup`` with scripted random draws on flat-colour images;
- ``preproc``: ``ValTransform()`` and ``ValTransform(legacy=True)`` of a random image (eval inputs).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "megvii_reference.json.gz"


def _floats(t) -> list:
    """float32 values as their shortest decimal (exact when read back as float32, a third of the size)."""
    a = np.asarray(t, dtype=np.float32)
    return np.array([float(str(x)) for x in a.reshape(-1)], dtype=np.float64).reshape(a.shape).tolist()


def record_lr() -> list:
    from yolox.utils import LRScheduler

    cases = []
    for lr, ipe, epochs, warm, no_aug, min_ratio, warm_lr in [
        (0.01, 7, 20, 3, 4, 0.05, 0.0),
        (0.02, 1, 10, 2, 0, 0.05, 0.001),
        (0.01 / 64 * 64, 1833, 300, 5, 15, 0.05, 0.0),
    ]:
        sch = LRScheduler("yoloxwarmcos", lr, ipe, epochs, warmup_epochs=warm, warmup_lr_start=warm_lr,
                          no_aug_epochs=no_aug, min_lr_ratio=min_ratio)
        total = ipe * epochs
        its = sorted(set(list(range(0, min(total, 400) + 1)) + list(range(0, total + 1, max(total // 997, 1)))
                         + [total]))
        cases.append({"lr": lr, "iters_per_epoch": ipe, "max_epoch": epochs, "warmup_epochs": warm,
                      "no_aug_epochs": no_aug, "min_lr_ratio": min_ratio, "warmup_lr": warm_lr,
                      "iters": its, "values": [float(sch.update_lr(i)) for i in its]})
    return cases


def _small_model() -> torch.nn.Module:
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
    with torch.no_grad():
        for i, t in enumerate(m.state_dict().values()):
            if t.dtype.is_floating_point:
                t.copy_(torch.linspace(-1, 1, t.numel()).reshape(t.shape) * (i + 1))
    return m


def ema_schedule(model: torch.nn.Module, ema, steps: int = 3) -> list[dict]:
    """Changes ``model`` deterministically and updates ``ema`` ``steps`` times (shared with the test)."""
    out = []
    for step in range(1, steps + 1):
        with torch.no_grad():
            for i, t in enumerate(model.state_dict().values()):
                if t.dtype.is_floating_point:
                    t.add_(0.1 * step * (i + 1))
                else:
                    t.add_(1)
        ema.update(model)
        out.append({k: _floats(v) for k, v in ema.ema.state_dict().items()})
    return out


def record_ema() -> dict:
    from yolox.utils import ModelEMA

    updates = [0, 1, 2, 10, 100, 1000, 2000, 5000, 20000, 100000]
    ema = ModelEMA(_small_model(), 0.9998)
    decay = [float(ema.decay(u)) for u in updates]
    model = _small_model()
    ema = ModelEMA(model, 0.9998)
    ema.updates = 1500           # mid-ramp: d ~ 0.53, both terms matter
    return {"decay_rate": 0.9998, "updates": updates, "decay": decay, "start_updates": 1500,
            "states": ema_schedule(model, ema)}


def record_optimizer_groups() -> list:
    from yolox.exp import get_exp

    out = []
    for name in ("yolox-nano", "yolox-s"):
        exp = get_exp(None, name)
        exp.num_classes = 3
        model = exp.get_model()
        names = {id(p): n for n, p in model.named_parameters()}
        opt = exp.get_optimizer(8)
        out.append({"model": name, "groups": [[names[id(p)] for p in g["params"]] for g in opt.param_groups],
                    "weight_decay": [g["weight_decay"] for g in opt.param_groups],
                    "momentum": opt.param_groups[0]["momentum"], "nesterov": opt.param_groups[0]["nesterov"]})
    return out


def record_no_aug() -> list:
    from yolox.core.trainer import Trainer

    cases = []
    for max_epoch, no_aug_epochs, start in [(300, 15, 0), (300, 15, 290), (10, 0, 0), (5, 2, 0), (3, 5, 0),
                                            (20, 4, 15), (20, 4, 16)]:
        closed = []
        t = types.SimpleNamespace(max_epoch=max_epoch, is_distributed=False, save_ckpt=lambda **kw: None,
                                  exp=types.SimpleNamespace(no_aug_epochs=no_aug_epochs, eval_interval=10),
                                  model=types.SimpleNamespace(head=types.SimpleNamespace(use_l1=False)),
                                  train_loader=types.SimpleNamespace(close_mosaic=lambda: closed.append(t.epoch)))
        t.no_aug = start >= max_epoch - no_aug_epochs      # Trainer.before_train's rule
        l1 = []
        for epoch in range(start, max_epoch):
            t.epoch = epoch
            Trainer.before_epoch(t)
            l1.append(bool(t.model.head.use_l1))
        cases.append({"max_epoch": max_epoch, "no_aug_epochs": no_aug_epochs, "start_epoch": start,
                      "close_mosaic_epochs": closed, "l1_from": start + l1.index(True) if any(l1) else None})
    return cases


def _load_030_head(megvii: Path):
    """``YOLOXHead`` as it was at tag 0.3.0 (its own module, next to HEAD's)."""
    src = subprocess.run(["git", "-C", str(megvii), "show", "0.3.0:yolox/models/yolo_head.py"], capture_output=True,
                         text=True)
    if src.returncode:
        raise SystemExit(f"cannot read tag 0.3.0 from {megvii} (needs the git history): {src.stderr}")
    path = megvii / "yolox" / "models" / "_yolo_head_030.py"
    path.write_text(src.stdout)
    spec = importlib.util.spec_from_file_location("yolox.models._yolo_head_030", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.YOLOXHead


def _grid(h: int, w: int) -> torch.Tensor:
    rows = []
    for s in (8, 16, 32):
        ys, xs = torch.meshgrid(torch.arange(h // s), torch.arange(w // s), indexing="ij")
        rows.append(torch.stack((xs, ys, torch.full_like(xs, s)), -1).reshape(-1, 3))
    return torch.cat(rows).float()


def simota_cases(n: int = 60, nc: int = 3, seed: int = 0) -> list[dict]:
    """Random SimOTA inputs: GTs in (64, 64) or (64, 96) images, predictions near them and elsewhere."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(n):
        h, w = (64, 64) if i % 2 == 0 else (64, 96)
        grid = _grid(h, w)
        num_gt = int(torch.randint(1, 7, (1,), generator=g))
        wh = torch.rand(num_gt, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6]) + 3
        c = wh / 2 + torch.rand(num_gt, 2, generator=g) * (torch.tensor([w, h]) - wh)
        gts = torch.cat([c, wh], 1)
        cls = torch.randint(0, nc, (num_gt,), generator=g)
        a = len(grid)
        centres = (grid[:, :2] + 0.5) * grid[:, 2:]
        near = gts[torch.randint(0, num_gt, (a,), generator=g)]
        pred = torch.cat([centres + torch.randn(a, 2, generator=g) * 4,
                          (near[:, 2:] * torch.exp(torch.randn(a, 2, generator=g) * 0.4))], 1)
        logits = torch.randn(a, 1 + nc, generator=g) * 2
        cases.append({"hw": [h, w], "gt_boxes": _floats(gts), "gt_classes": cls.tolist(),
                      "pred_boxes": _floats(pred), "obj_logits": _floats(logits[:, 0]),
                      "cls_logits": _floats(logits[:, 1:])})
    return cases


def record_simota(megvii: Path) -> dict:
    from yolox.models.yolo_head import YOLOXHead

    heads = {"0.3.0": _load_030_head(megvii)(3, 0.25), "head": YOLOXHead(3, 0.25)}
    out = {}
    for rule, head in heads.items():
        cases = simota_cases()
        captured = {}
        name = "dynamic_k_matching" if rule == "0.3.0" else "simota_matching"
        orig = getattr(head, name)

        def capture(cost, ious, gt_classes, num_gt, fg_mask, orig=orig):
            captured.update(cand=fg_mask.nonzero().squeeze(1).tolist(), cost=_floats(cost), ious=_floats(ious),
                            dynamic_k=torch.clamp(torch.topk(ious, min(10, ious.size(1)), dim=1)[0].sum(1).int(),
                                                  min=1).tolist())
            return orig(cost, ious, gt_classes, num_gt, fg_mask)

        setattr(head, name, capture)
        for case in cases:
            grid = _grid(*case["hw"])
            gts = torch.tensor(case["gt_boxes"], dtype=torch.float32)
            cls = torch.tensor(case["gt_classes"], dtype=torch.float32)
            pred = torch.tensor(case["pred_boxes"], dtype=torch.float32)
            cls_preds = torch.tensor(case["cls_logits"], dtype=torch.float32)[None]
            obj_preds = torch.tensor(case["obj_logits"], dtype=torch.float32)[None, :, None]
            x_shifts, y_shifts, strides = grid[None, :, 0], grid[None, :, 1], grid[None, :, 2]
            captured.clear()
            if rule == "0.3.0":
                res = head.get_assignments(0, len(gts), len(grid), gts, cls, pred, strides, x_shifts, y_shifts,
                                           cls_preds, pred[None], obj_preds, None, None)
            else:
                res = head.get_assignments(0, len(gts), gts, cls, pred, strides, x_shifts, y_shifts, cls_preds,
                                           obj_preds)
            matched_classes, fg_mask, matched_iou, matched_gt, num_fg = res
            case.update(captured, fg=fg_mask.nonzero().squeeze(1).tolist(), matched_gt=matched_gt.tolist(),
                        matched_iou=_floats(matched_iou), num_fg=int(num_fg))
        out[rule] = cases
    return out


def record_mixup() -> list:
    """Megvii's mixup with scripted draws; partner images already at their letterboxed size (Megvii's
    COCO dataset hands out images resized by ``load_resized_img``), flat colours so pads are visible."""
    import yolox.data.datasets.mosaicdetection as md

    input_dim = (64, 96)
    partner = np.full((48, 96, 3), 50, np.uint8)            # fits the width: no resize in mixup
    partner_boxes = np.array([[2, 3, 30, 40, 1], [60, 10, 94, 47, 2], [40, 20, 44, 24, 0]], np.float32)
    origin = np.full((64, 96, 3), 200, np.uint8)
    origin_boxes = np.array([[10, 10, 50, 50, 0]], np.float32)

    class FakeDataset:
        def load_anno(self, i):
            return partner_boxes if i == 1 else np.zeros((0, 5), np.float32)   # image 0 has no labels

        def pull_item(self, i):
            return partner.copy(), self.load_anno(i).copy(), None, i

    cases = []
    for jit, flip_u, yoff, xoff in [(0.6, 0.2, 0, 0), (1.4, 0.8, 20, 30), (1.0, 0.9, 0, 0), (1.25, 0.1, 11, 3)]:
        draws_uniform = iter([jit, flip_u])
        h, w = max(int(64 * jit), 64), max(int(96 * jit), 96)
        draws_randint = iter([0, 1] + ([yoff] if h > 64 else []) + ([xoff] if w > 96 else []))
        md.random = types.SimpleNamespace(uniform=lambda a, b: next(draws_uniform),
                                          randint=lambda a, b: next(draws_randint))
        obj = md.MosaicDetection.__new__(md.MosaicDetection)
        obj._dataset, obj.mixup_scale = FakeDataset(), (0.5, 1.5)
        obj.__len__ = lambda: 2
        img, labels = md.MosaicDetection.mixup(obj, origin.copy(), origin_boxes.copy(), input_dim)
        cases.append({"input_dim": list(input_dim), "jit": jit, "flip": flip_u > 0.5, "y_offset": yoff if h > 64 else 0,
                      "x_offset": xoff if w > 96 else 0, "partner_shape": list(partner.shape),
                      "partner_value": 50, "partner_boxes": _floats(partner_boxes), "origin_value": 200,
                      "origin_boxes": _floats(origin_boxes), "labels": _floats(labels),
                      "image": np.asarray(img)[..., 0].tolist()})
    md.random = __import__("random")
    return cases


def record_preproc() -> list:
    from yolox.data.data_augment import ValTransform

    rng = np.random.default_rng(0)
    cases = []
    for shape, size in [((37, 53, 3), (64, 96)), ((120, 90, 3), (64, 64))]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        out, _ = ValTransform()(img.copy(), None, size)
        leg, _ = ValTransform(legacy=True)(img.copy(), None, size)
        cases.append({"bgr": img.tolist(), "size": list(size), "out": _floats(out), "legacy": _floats(leg)})
    return cases


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--megvii", type=Path, required=True, help="a git clone of Megvii-BaseDetection/YOLOX")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    sys.path.insert(0, str(args.megvii))
    commit = subprocess.run(["git", "-C", str(args.megvii), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    tag = subprocess.run(["git", "-C", str(args.megvii), "rev-parse", "0.3.0^{commit}"], capture_output=True,
                         text=True).stdout.strip()
    torch.manual_seed(0)
    doc = {"megvii_commit": commit, "megvii_0_3_0_commit": tag, "torch": torch.__version__,
           "script": "tools/record_megvii_reference.py",   # relative to the project folder
           "lr": record_lr(), "ema": record_ema(), "optimizer_groups": record_optimizer_groups(),
           "no_aug": record_no_aug(), "simota": record_simota(args.megvii), "mixup": record_mixup(),
           "preproc": record_preproc()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    with gzip.open(tmp, "wt") as f:
        json.dump(doc, f, allow_nan=False)
    tmp.replace(args.out)
    n = sum(len(v) for v in doc["simota"].values())
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB): Megvii {commit[:7]}, {n} SimOTA cases, "
          f"{sum(len(c['iters']) for c in doc['lr'])} LR points")
    assert math.isfinite(doc["lr"][0]["values"][-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
