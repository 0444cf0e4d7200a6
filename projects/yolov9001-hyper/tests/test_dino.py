"""DINOv3 distillation: the teacher on the tiny random config, the hub error, every loss term, the trainer's
every_n / max_epochs schedule, and a short training run with the teacher on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from yolov9001.core.config import get_config
from yolov9001.core.runtime import attach_runtime
from yolov9001.models import HyperYOLO
from yolov9001.utils import distill as D
from yolov9001.utils.assigners import simota_assign, tal_assign
from yolov9001.utils.dino_teacher import DINOTeacher, DinoLoadError
from yolov9001.utils.loss import DetectionLoss

TERMS = {"objfor02", "reg_weight_with_saliency", "centroid_align", "cls_proto", "contrast", "feat_distill"}
WEIGHT_OFF = {"objfor02": {"objfor02_weight": 0.0}, "reg_weight_with_saliency": {"reg_weight_floor": 1.0,
              "reg_weight_power": 0.0}, "centroid_align": {"centroid_weight": 0.0},
              "cls_proto": {"cls_proto_weight": 0.0}, "contrast": {"contrast_weight": 0.0},
              "feat_distill": {"feat_weight": 0.0}}
ITEM = {"centroid_align": "dino/centroid", "contrast": "dino/contrast", "feat_distill": "dino/feat"}


@pytest.fixture(scope="module")
def teacher():
    return DINOTeacher("tiny-random", torch.device("cpu"), resolution=64)


# ---- the teacher ----------------------------------------------------------------------------------------

def test_teacher_outputs_on_the_tiny_config(teacher):
    state = torch.random.get_rng_state()
    x = torch.rand(2, 3, 96, 80, generator=torch.Generator().manual_seed(0))
    out = teacher(x)
    assert torch.equal(torch.random.get_rng_state(), state)       # building it left the global RNG alone
    assert out.patches.shape == (2, 4, 4, 64) and out.cls.shape == (2, 64) and out.saliency.shape == (2, 4, 4)
    assert out.saliency_source == "cls_attention" and (out.saliency >= 0).all()
    m = teacher.model
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert m.config._attn_implementation == "sdpa"
    # against the eager model's own attention matrix and tokens (1 CLS + 4 registers + 16 patches)
    m.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            ref = m(pixel_values=teacher.preprocess(x), output_attentions=True)
    finally:
        m.set_attn_implementation("sdpa")
    cls_row = ref.attentions[-1][:, :, 0]                            # [B, heads, T]
    torch.testing.assert_close(out.saliency, cls_row[:, :, 5:].mean(1).reshape(2, 4, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.patches, ref.last_hidden_state[:, 5:].reshape(2, 4, 4, 64), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.cls, ref.last_hidden_state[:, 0], atol=1e-5, rtol=0)
    patch_mass = out.saliency.flatten(1).sum(1)                      # the rest goes to CLS and the registers
    assert ((patch_mass > 0) & (patch_mass < 1)).all()
    torch.testing.assert_close(patch_mass + cls_row[:, :, :5].mean(1).sum(1), torch.ones(2))


def test_preprocess_resizes_and_normalises(teacher):
    x = torch.full((1, 3, 50, 70), 0.5)
    y = teacher.preprocess(x)
    assert y.shape == (1, 3, 64, 64)
    torch.testing.assert_close(y[0, :, 0, 0], (0.5 - torch.tensor([0.485, 0.456, 0.406])) /
                               torch.tensor([0.229, 0.224, 0.225]))


def test_token_energy_fallback_and_lazy_unload(monkeypatch):
    t = DINOTeacher("tiny-random", torch.device("cpu"), resolution=32)
    assert not t.loaded                                              # lazy: nothing built yet
    monkeypatch.setattr(t, "_install_hook", lambda: None)            # as for a model without the DINOv3 layout
    out = t(torch.rand(3, 3, 32, 32))
    assert out.saliency_source == "token_energy"
    torch.testing.assert_close(out.saliency.flatten(1).sum(1), torch.ones(3))
    t.unload()
    assert not t.loaded and t.model is None


def test_gated_repo_offline_gives_one_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(DinoLoadError) as e:
        DINOTeacher("facebook/dinov3-vitb16-pretrain-lvd1689m", torch.device("cpu")).build()
    msg = str(e.value)
    assert "HF_TOKEN" in msg and "gated" in msg and "tiny-random" in msg and "HF_HUB_OFFLINE" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__       # no hub traceback attached
    with pytest.raises(DinoLoadError, match="local folder"):
        DINOTeacher(str(tmp_path), torch.device("cpu")).build()            # an empty folder


def test_int_quant_without_torchao_is_a_clear_error():
    pytest.importorskip("transformers")
    try:
        import torchao  # noqa: F401
        pytest.skip("torchao is installed")
    except ImportError:
        pass
    with pytest.raises(DinoLoadError, match="torchao"):
        DINOTeacher("tiny-random", torch.device("cpu"), resolution=32, quant="int8").build()
    with pytest.raises(ValueError, match="multiple of 16"):
        DINOTeacher("tiny-random", torch.device("cpu"), resolution=40)


# ---- assignment prior -----------------------------------------------------------------------------------

def _two_anchor_case():
    """One GT; anchors 0 and 1 equally good (same IoU, same score); anchor 2 far away."""
    anchor_px = torch.tensor([[12.0, 16.0], [20.0, 16.0], [60.0, 60.0]])
    pred = torch.tensor([[[4.0, 8.0, 28.0, 24.0], [4.0, 8.0, 28.0, 24.0], [50.0, 50.0, 64.0, 64.0]]])
    scores = torch.full((1, 3, 2), 0.3)
    gt_boxes, gt_labels = torch.tensor([[[4.0, 8.0, 28.0, 24.0]]]), torch.tensor([[1]])
    return scores, pred, anchor_px, gt_labels, gt_boxes, gt_labels >= 0


@pytest.mark.parametrize("mode", ["simota", "tal"])
def test_saliency_prior_moves_the_match_to_the_salient_anchor(mode):
    scores, pred, anchor_px, labels, boxes, mask = _two_anchor_case()
    stride = torch.full((3, 1), 16.0)

    def assign(prior):
        if mode == "simota":   # topq 1: dynamic_k = 1, a single match
            return simota_assign(scores, pred, anchor_px, stride, labels, boxes, mask, topq=1, prior=prior,
                                 prior_weight=1.0).fg[0]
        return tal_assign(scores, pred, anchor_px, labels, boxes, mask, topk=1, prior=prior).fg[0]

    assert assign(torch.tensor([[0.1, 0.9, 0.0]])).tolist() == [False, True, False]
    assert assign(torch.tensor([[0.9, 0.1, 0.0]])).tolist() == [True, False, False]


def test_anchor_prior_and_centroids_by_hand():
    sal = torch.zeros(1, 2, 2)
    sal[0, 1, 0] = 4.0                                                    # bottom-left cell of a 64 px canvas
    prior = D.anchor_prior(sal, torch.tensor([[16.0, 48.0], [48.0, 16.0]]), 64)
    torch.testing.assert_close(prior, torch.tensor([[1.0, 0.0]]))
    boxes = torch.tensor([[[0.0, 0.0, 64.0, 64.0], [32.0, 0.0, 64.0, 32.0]]])
    cent = D.saliency_centroids(sal, boxes, 64)
    torch.testing.assert_close(cent, torch.tensor([[[16.0, 48.0], [48.0, 16.0]]]))  # 2nd: no mass -> own centre


# ---- loss terms -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loss_case(teacher):
    torch.manual_seed(0)
    model = HyperYOLO("n", nc=3)
    base_cfg = get_config(hyp={"assign_mode": "tal"})
    attach_runtime(model, 64, base_cfg)
    model.detect.bias_init(model.strides, 64)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([[0, 1, 4, 6, 30, 40], [0, 2, 34, 30, 60, 62], [1, 0, 10, 10, 50, 50.0], [1, 1, 2, 40, 20, 60]])
    return model, x, t, teacher(x)


def _run(model, x, t, tout, term: str | None, **extra):
    keys = {"assign_mode": "tal"}
    if term:
        keys.update({f"dino.{term}": True, **{f"dino.{k}": v for k, v in extra.items()}})
    cfg = get_config(hyp=keys)
    kept = {}
    hook = model.hyper_modules()[-1].register_forward_hook(lambda m, i, o: kept.__setitem__("map", o) and None)
    try:
        model.train()
        model.zero_grad(set_to_none=True)
        feats = model(x)
    finally:
        hook.remove()
    head = D.DistillHead(kept["map"].shape[1], 64, 3, feat=term == "feat_distill", contrast=term == "contrast")
    torch.manual_seed(0)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.05)
    dino = D.DinoBatch(out=tout, student_map=kept["map"], head=head, imgsz=64) if term else None
    loss, items = DetectionLoss(model, cfg)(feats, t, epoch=0, dino=dino)
    return loss, items, head


@pytest.mark.parametrize("term", sorted(TERMS))
def test_each_dino_term(loss_case, teacher, term):
    model, x, t, tout = loss_case
    base, base_items, _ = _run(model, x, t, tout, None)
    loss, items, head = _run(model, x, t, tout, term)
    assert torch.isfinite(loss) and items["dino/total"] >= 0
    assert float(loss) != pytest.approx(float(base), rel=1e-7, abs=0)   # the term changes the loss
    # the term's gradient reaches the student (its gradients differ from the detection loss's alone) ...
    base.backward()
    g_base = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
    loss, items, head = _run(model, x, t, tout, term)
    loss.backward()
    assert any(g0 is not None and p.grad is not None and not torch.equal(p.grad, g0)
               for p, g0 in zip(model.parameters(), g_base))
    # ... and never the teacher
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())
    if term in ITEM:
        assert items[ITEM[term]] > 0
        if term in ("contrast", "feat_distill"):
            assert all(p.grad is not None for p in head.parameters() if p.requires_grad)
    # weight zero: exactly the loss without the teacher
    off, off_items, _ = _run(model, x, t, tout, term, **WEIGHT_OFF[term])
    torch.testing.assert_close(off, base, rtol=1e-6, atol=1e-6)
    if term in ITEM:
        assert off_items[ITEM[term]] == 0.0


def test_centroid_term_stops_after_its_epochs(loss_case):
    model, x, t, tout = loss_case
    cfg = get_config(hyp={"assign_mode": "tal", "dino.centroid_align": True, "dino.centroid_max_epochs": 2})
    dino = D.DinoBatch(out=tout, student_map=None, head=None, imgsz=64)
    loss_fn = DetectionLoss(model, cfg)
    assert loss_fn(model(x), t, epoch=1, dino=dino)[1]["dino/centroid"] > 0
    assert "dino/centroid" not in loss_fn(model(x), t, epoch=2, dino=dino)[1]


# ---- trainer schedule -----------------------------------------------------------------------------------

def test_every_n_reuses_only_the_same_images_and_max_epochs_unloads(monkeypatch):
    from yolov9001.core.distiller import Distiller

    cfg = get_config(hyp={"dino.enabled": True, "dino.model_name": "tiny-random", "dino.resolution": 32,
                          "dino.every_n": 2, "dino.max_epochs": 1, "imgsz": 64})
    cfg.nc = 3
    model = HyperYOLO("n", nc=3)
    attach_runtime(model, 64, cfg)
    dist = Distiller(cfg, model, torch.device("cpu"))
    calls = []
    real = dist.teacher.__call__
    monkeypatch.setattr(type(dist.teacher), "__call__", lambda self, x: calls.append(1) or real(x))
    x = torch.rand(2, 3, 64, 64)
    assert dist.batch(x, [0, 1], epoch=0, step=0) is not None and len(calls) == 1
    assert dist.batch(x, [0, 1], epoch=0, step=1) is not None and len(calls) == 1    # same images: reused
    assert dist.batch(x, [2, 3], epoch=0, step=3) is None and dist.skipped_steps == 1  # other images: skipped
    assert dist.batch(x, [2, 3], epoch=0, step=4) is not None and len(calls) == 2
    assert dist.teacher.loaded
    dist.end_epoch(0)
    assert not dist.teacher.loaded and dist.batch(x, [2, 3], epoch=1, step=6) is None and len(calls) == 2


# ---- a training run -------------------------------------------------------------------------------------

ALL_ON = ("dino.enabled:true,dino.model_name:tiny-random,dino.resolution:64,dino.objfor02:true,"
          "dino.reg_weight_with_saliency:true,dino.centroid_align:true,dino.cls_proto:true,dino.contrast:true,"
          "dino.feat_distill:true,dino.bb_lr_gate:true,dino.prewarm:true,warmup_min_iters:0")


@pytest.mark.slow
def test_training_with_the_tiny_teacher(synthetic, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from yolov9001.cli import main

    res = main(["train", "--data", str(synthetic["yolo"]), "--img-size", "64", "--epochs", "2", "--batch-size", "8",
                "--workers", "0", "--log-dir", str(tmp_path), "--tb-only", "--device", "cpu",
                "--hypo", ALL_ON + ",dino.max_epochs:1"])
    run = Path(res["run_dir"])
    rows = [json.loads(x) for x in (run / "logs" / "train.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    for k in ("dino/centroid", "dino/contrast", "dino/feat", "dino/total", "dino/share", "dino/bb_lr_gate"):
        assert k in first and first[k] == first[k], k                  # present and not NaN
    assert 0 < first["dino/share"] < 1 and first["dino/bb_lr_gate"] < 1
    assert "dino/total" not in last and last["dino/teacher_loaded"] == 0.0   # epoch 2 > max_epochs: unloaded
    tags = EventAccumulator(str(run / "tb")).Reload().Tags()["scalars"]
    assert {"train/dino/feat", "train/dino/share"} <= set(tags)
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    head = ck["distill"]["head"]
    assert "feat_proj.weight" in head and "protos" in head and ck["distill"]["gate"] == 1.0   # gate open again
    teacherish = [k for k in ck["model"] if "attention" in k or "embeddings" in k]
    assert teacherish == [] and set(ck["model"]) == set(HyperYOLO("n", nc=3).state_dict())
    assert os.path.getsize(run / "checkpoints" / "last.pt") < 80e6


def test_lr_gate_reaches_the_backbone_lr_and_opens_when_the_teacher_goes():
    """bb_lr_gate: the backbone groups' LR is multiplied by the gate; steps without DINO terms pull the
    share down; after max_epochs the gate is 1 and gone from the groups."""
    from yolov9001.core.distiller import Distiller
    from yolov9001.core.optim import build_optimizer, set_lr

    cfg = get_config(hyp={"dino.enabled": True, "dino.model_name": "tiny-random", "dino.resolution": 32,
                          "dino.bb_lr_gate": True, "dino.max_epochs": 1, "imgsz": 64, "warmup_epochs": 0})
    cfg.nc = 3
    model = HyperYOLO("n", nc=3)
    attach_runtime(model, 64, cfg)
    opt = build_optimizer(model, cfg, 4, 1)
    dist = Distiller(cfg, model, torch.device("cpu"))
    for _ in range(30):
        dist.after_step({"dino/total": 3.0}, 4.0, opt)          # DINO = 75 % of the loss
    assert 0.7 < dist.share < 0.75 and dist.gate == pytest.approx(max(0.5, 1 - dist.share))
    set_lr(opt, cfg, epoch=0, it=0, iters_per_epoch=10)
    lrs = {g["name"]: g["lr"] / g["lr_scale"] for g in opt.param_groups}
    assert lrs["backbone.decay"] == pytest.approx(0.5 * lrs["head.decay"])   # floored at bb_lr_gate_min
    before = dist.share
    dist.after_step({}, 4.0, opt)                               # a step with no DINO terms
    assert dist.share == pytest.approx(0.9 * before)
    dist.end_epoch(0, opt)                                      # max_epochs reached
    set_lr(opt, cfg, epoch=1, it=0, iters_per_epoch=10)
    lrs = {g["name"]: g["lr"] / g["lr_scale"] for g in opt.param_groups}
    assert lrs["backbone.decay"] == pytest.approx(lrs["head.decay"]) and dist.gate == 1.0


def test_prototypes_by_hand():
    head = D.DistillHead(4, 2, 3, feat=False, contrast=False)
    f = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    head.update_protos(f, torch.tensor([0, 1, 0]), momentum=0.5)
    torch.testing.assert_close(head.protos, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    assert head.proto_count.tolist() == [2.0, 1.0, 0.0]
    head.update_protos(torch.tensor([[0.0, 5.0]]), torch.tensor([0]), momentum=0.5)   # EMA after the first
    torch.testing.assert_close(head.protos[0], torch.tensor([0.5, 0.5]))
