"""This project against values recorded once from Megvii's own code (``tests/data/megvii_reference.json.gz``,
written by ``tools/record_megvii_reference.py``, which names the Megvii commit; nothing from Megvii is
imported or downloaded here)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from yolox_gaudi.config import get_exp
from yolox_gaudi.data import TrainDataset
from yolox_gaudi.loss import dynamic_k_matching, simota_assign, simota_cost
from yolox_gaudi.model import build_model, make_grid
from yolox_gaudi.optim import LRScheduler, ModelEMA, build_optimizer

DATA = Path(__file__).parent / "data" / "megvii_reference.json.gz"
TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture(scope="module")
def ref() -> dict:
    with gzip.open(DATA, "rt") as f:
        return json.load(f)


def test_reference_names_its_source(ref):
    assert len(ref["megvii_commit"]) == 40 and len(ref["megvii_0_3_0_commit"]) == 40
    assert (Path(__file__).resolve().parents[1] / ref["script"]).is_file()      # relative to the project


def test_lr_schedule_equals_megvii(ref):
    for case in ref["lr"]:
        exp = get_exp("yolox-s").merge(["max_epoch", str(case["max_epoch"]), "warmup_epochs",
                                        str(case["warmup_epochs"]), "no_aug_epochs", str(case["no_aug_epochs"]),
                                        "min_lr_ratio", str(case["min_lr_ratio"]), "warmup_lr", str(case["warmup_lr"])])
        fn = LRScheduler(exp, case["lr"], case["iters_per_epoch"])
        ours = [fn(i) for i in case["iters"]]
        np.testing.assert_allclose(ours, case["values"], rtol=1e-12, atol=1e-15)


def test_ema_equals_megvii(ref):
    sys.path.insert(0, str(TOOLS))
    try:
        from record_megvii_reference import _small_model, ema_schedule
    finally:
        sys.path.remove(str(TOOLS))
    e = ref["ema"]
    ema = ModelEMA(_small_model(), e["decay_rate"])
    for u, d in zip(e["updates"], e["decay"]):
        ema.updates = u
        assert ema.d() == pytest.approx(d, rel=1e-12, abs=1e-15)
    model = _small_model()
    ema = ModelEMA(model, e["decay_rate"])
    ema.updates = e["start_updates"]
    for step, (ours, theirs) in enumerate(zip(ema_schedule(model, ema), e["states"]), 1):
        assert ours.keys() == theirs.keys()
        for k in ours:
            if k.endswith("num_batches_tracked"):
                # On purpose: integer buffers are copied from the model (Megvii leaves them at 0). They only
                # matter for BN with momentum=None, which YOLOX (momentum 0.03) never uses.
                assert (ours[k], theirs[k]) == (step, 0)
                continue
            np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-6, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("model_name", ["yolox-nano", "yolox-s"])
def test_optimizer_groups_equal_megvii(ref, model_name):
    theirs = next(c for c in ref["optimizer_groups"] if c["model"] == model_name)
    exp = get_exp(model_name).merge(["num_classes", "3"])
    model = build_model(exp)
    names = {id(p): n for n, p in model.named_parameters()}
    opt = build_optimizer(model, exp, 0.01)
    assert [[names[id(p)] for p in g["params"]] for g in opt.param_groups] == theirs["groups"]
    assert [g["weight_decay"] for g in opt.param_groups] == theirs["weight_decay"]
    assert opt.param_groups[0]["momentum"] == theirs["momentum"] and opt.param_groups[0]["nesterov"]


def test_no_aug_switch_equals_megvii(ref):
    for case in ref["no_aug"]:
        exp = get_exp("yolox-s").merge(["max_epoch", str(case["max_epoch"]), "no_aug_epochs",
                                        str(case["no_aug_epochs"])])
        closed = [e for e in range(case["start_epoch"], case["max_epoch"]) if e >= exp.no_aug_start_epoch]
        # Megvii calls close_mosaic in the switch epoch (and in every epoch of a run resumed past it).
        assert closed[:1] == case["close_mosaic_epochs"][:1], case
        assert (closed[0] if closed else None) == case["l1_from"], case
        if case["start_epoch"] >= case["max_epoch"] - case["no_aug_epochs"]:
            assert closed == case["close_mosaic_epochs"]


def _case_tensors(case):
    h, w = case["hw"]
    grid = torch.cat([make_grid(h // s, w // s, s, "cpu") for s in (8, 16, 32)])
    f = lambda k: torch.tensor(case[k], dtype=torch.float32)  # noqa: E731
    return grid, f("gt_boxes"), torch.tensor(case["gt_classes"]), f("pred_boxes"), f("cls_logits"), f("obj_logits")


@pytest.mark.parametrize("rule", ["0.3.0", "head"])
def test_simota_cost_dynamic_k_and_matches_equal_megvii(ref, rule):
    """60 random cases per rule (square and 64x96 inputs): candidates, the cost matrix, dynamic k, the
    foreground anchors, their GTs and IoUs all equal what Megvii's get_assignments computed."""
    cases = ref["simota"][rule]
    assert len(cases) == 60
    total_fg = 0
    for i, case in enumerate(cases):
        grid, gts, cls, pred, cls_l, obj_l = _case_tensors(case)
        cand, cost, ious = simota_cost(gts, cls, pred, cls_l, obj_l, grid, rule=rule)
        assert cand.tolist() == case["cand"], i
        np.testing.assert_allclose(ious.numpy(), np.array(case["ious"]), rtol=1e-5, atol=1e-6, err_msg=str(i))
        np.testing.assert_allclose(cost.numpy(), np.array(case["cost"]), rtol=2e-6, atol=1e-3, err_msg=str(i))
        _, dynamic_k = dynamic_k_matching(cost, ious)
        assert dynamic_k.tolist() == case["dynamic_k"], i
        a = simota_assign(gts, cls, pred, cls_l, obj_l, grid, rule=rule)
        assert a.fg_mask.nonzero().squeeze(1).tolist() == case["fg"], i
        assert a.matched_gt.tolist() == case["matched_gt"] and a.num_fg == case["num_fg"], i
        np.testing.assert_allclose(a.matched_iou.numpy(), case["matched_iou"], rtol=1e-5, atol=1e-6)
        total_fg += a.num_fg
    assert total_fg > 200       # the cases exercise real matchings, not empty ones


def test_the_two_rules_differ_on_the_recorded_cases(ref):
    differ = sum(a["fg"] != b["fg"] for a, b in zip(ref["simota"]["0.3.0"], ref["simota"]["head"]))
    assert differ > 30


class _Scripted:
    """A numpy Generator stand-in returning recorded draws in the order ``_mixup`` asks for them."""

    def __init__(self, integers, uniform, random):
        self._i, self._u, self._r = iter(integers), iter(uniform), iter(random)

    def integers(self, lo, hi=None):
        v = next(self._i)
        assert (0 if hi is None else lo) <= v < (lo if hi is None else hi), (v, lo, hi)
        return v

    def uniform(self, lo, hi):
        return next(self._u)

    def random(self):
        return next(self._r)


@pytest.mark.parametrize("k", range(4))
def test_mixup_equals_megvii(ref, k):
    """Megvii's mixup with the same draws: the same boxes (kept however little of them is left, clipped to
    the crop), a labelled partner, and the same picture: 114 inside the partner's letterbox canvas, 0 beyond
    it, averaged with the mosaic."""
    case = ref["mixup"][k]
    h, w = case["input_dim"]
    partner = np.full(case["partner_shape"], case["partner_value"], np.uint8)
    partner_boxes = np.array(case["partner_boxes"], np.float32)

    class Source:
        labels = [np.zeros((0, 5), np.float32), partner_boxes]     # image 0 unlabelled, as recorded

        def __len__(self):
            return 2

        def load_resized(self, i, size):
            assert i == 1, "mixup must pick the labelled image"
            return partner.copy(), partner_boxes.copy()

    exp = get_exp("yolox-s").merge(["input_size", f"{h},{w}"])
    ds = TrainDataset(Source(), exp, seed=0)
    assert ds.labelled.tolist() == [1]
    rng = _Scripted([0] + ([case["y_offset"]] if int(h * case["jit"]) > h else [])
                    + ([case["x_offset"]] if int(w * case["jit"]) > w else []),
                    [case["jit"]], [0.9 if case["flip"] else 0.1])
    origin = np.full((h, w, 3), case["origin_value"], np.uint8)
    img, labels = ds._mixup(origin, np.array(case["origin_boxes"], np.float32), rng)
    np.testing.assert_allclose(labels, np.array(case["labels"]), atol=1e-4)
    theirs = np.array(case["image"])
    # Flat regions agree exactly; the resampling filters (PIL here, cv2 there) differ on the edges only.
    assert (img[..., 0] == theirs).mean() > 0.97
    # the same flat levels cover the same share: 125 = partner, 157 = its 114 canvas, 100 = Megvii's 0 pad
    for level in (100, 125, 157):
        assert abs((img[..., 0] == level).mean() - (theirs == level).mean()) < 0.03, level


def test_mixup_skips_an_empty_mosaic(synthetic_coco):
    from yolox_gaudi.data import CocoSource, load_coco_split

    exp = get_exp("yolox-s").merge(["num_classes", "3", "input_size", "64,64", "mosaic_prob", "1", "mixup_prob", "1"])
    ds = TrainDataset(CocoSource(load_coco_split(synthetic_coco, "train2017")), exp, seed=0)
    calls = []
    ds._mixup = lambda img, labels, rng: calls.append(len(labels)) or (img, labels)
    ds._mosaic = lambda index, rng: (np.zeros((64, 64, 3), np.uint8), np.zeros((0, 5), np.float32))
    ds[0]
    assert calls == []           # Megvii: `not len(mosaic_labels) == 0` before mixing


def _stepped_optimizer(model, exp, order_names=None):
    """SGD with Megvii's groups (optionally in another parameter order), after one step with gradients."""
    if order_names is None:
        opt = build_optimizer(model, exp, 0.01)
    else:
        params = dict(model.named_parameters())
        opt = torch.optim.SGD([params[n] for n in order_names[0]], lr=0.01, momentum=0.9, nesterov=True)
        opt.add_param_group({"params": [params[n] for n in order_names[1]], "weight_decay": 5e-4})
        opt.add_param_group({"params": [params[n] for n in order_names[2]]})
    torch.manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    return opt


def _momentum_by_name(opt, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: opt.state[p]["momentum_buffer"] for g in opt.param_groups for p in g["params"]}


def test_optimizer_state_is_mapped_by_name():
    from yolox_gaudi.optim import load_optimizer_state, optimizer_param_names

    exp = get_exp("yolox-nano").merge(["num_classes", "3"])
    src = build_model(exp)
    ours = optimizer_param_names(build_optimizer(src, exp, 0.01), src)
    shuffled = [list(reversed(g)) for g in ours]           # another order in every group
    opt_src = _stepped_optimizer(src, exp, shuffled)
    saved = opt_src.state_dict()
    dst = build_model(exp)
    opt_dst = build_optimizer(dst, exp, 0.01)
    load_optimizer_state(opt_dst, dst, saved, optimizer_param_names(opt_src, src))
    a, b = _momentum_by_name(opt_src, src), _momentum_by_name(opt_dst, dst)
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(b[n], a[n], msg=n)
    # by position (the old behaviour) the reversed groups put buffers on parameters of another shape
    with pytest.raises(ValueError, match="shape"):
        load_optimizer_state(build_optimizer(dst, exp, 0.01), dst, saved, None)


def test_checkpoints_of_the_earlier_head_order_still_resume():
    """Checkpoints written before the head followed Megvii's order carry no names and list the head's
    stems first: the shapes pick that order, and each buffer lands on its parameter."""
    from yolox_gaudi.optim import _stems_first, load_optimizer_state, optimizer_param_names

    exp = get_exp("yolox-nano").merge(["num_classes", "3"])
    src = build_model(exp)
    old_order = _stems_first(optimizer_param_names(build_optimizer(src, exp, 0.01), src))
    assert old_order != optimizer_param_names(build_optimizer(src, exp, 0.01), src)
    opt_src = _stepped_optimizer(src, exp, old_order)
    dst = build_model(exp)
    opt_dst = build_optimizer(dst, exp, 0.01)
    load_optimizer_state(opt_dst, dst, opt_src.state_dict(), None)
    a, b = _momentum_by_name(opt_src, src), _momentum_by_name(opt_dst, dst)
    for n in a:
        torch.testing.assert_close(b[n], a[n], msg=n)


def test_unresumable_optimizer_state_says_why():
    from yolox_gaudi.optim import load_optimizer_state

    nano, s = get_exp("yolox-nano").merge(["num_classes", "3"]), get_exp("yolox-s").merge(["num_classes", "3"])
    saved = _stepped_optimizer(build_model(s), s).state_dict()
    m = build_model(nano)
    with pytest.raises(ValueError, match="groups hold"):
        load_optimizer_state(build_optimizer(m, nano, 0.01), m, saved, None)


@pytest.mark.slow
def test_resume_from_a_megvii_training_checkpoint(ref, tmp_path, train):
    """A checkpoint laid out as Megvii's trainer saves it (keys start_epoch/model/optimizer/best_ap, the
    optimizer's parameters in Megvii's get_optimizer order, no iteration count) resumes: the momentum of
    each parameter lands on that parameter, and the LR schedule continues at start_epoch x iters/epoch."""
    from yolox_gaudi.optim import load_optimizer_state

    exp = get_exp("yolox-nano").merge(["num_classes", "3"])
    model = build_model(exp)
    megvii_order = next(c for c in ref["optimizer_groups"] if c["model"] == "yolox-nano")["groups"]
    opt = _stepped_optimizer(model, exp, megvii_order)
    ckpt = tmp_path / "megvii_epoch_1.pth"
    torch.save({"start_epoch": 1, "model": model.state_dict(), "optimizer": opt.state_dict(), "best_ap": 0.0,
                "curr_ap": 0.0}, ckpt)
    # in process: the exact state mapping
    fresh = build_model(exp)
    fresh.load_state_dict(model.state_dict())
    opt2 = build_optimizer(fresh, exp, 0.01)
    load_optimizer_state(opt2, fresh, torch.load(ckpt, weights_only=True)["optimizer"])
    a, b = _momentum_by_name(opt, model), _momentum_by_name(opt2, fresh)
    for n in a:
        torch.testing.assert_close(b[n], a[n], msg=n)
    # through the CLI: one more epoch (16 images / batch 8 = 2 iterations per epoch)
    root = train(tmp_path, ["--batch-size", "8", "--resume", "--ckpt", str(ckpt)], ["max_epoch", "2"], "megvii")
    ck = torch.load(root / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["start_epoch"], ck["iteration"], ck["ema_updates"]) == (2, 4, 4)
    lrs = [json.loads(line)["lr"] for line in (root / "logs" / "train.jsonl").read_text().splitlines()]
    steps = [json.loads(line)["step"] for line in (root / "logs" / "train.jsonl").read_text().splitlines()]
    assert steps == [3, 4] and lrs[-1] == pytest.approx(0.01 / 64 * 8 * 0.05)   # schedule's end, not its start


def test_resume_from_an_incompatible_checkpoint_is_a_clear_error(tmp_path, capsys):
    from yolox_gaudi.train import main

    s = get_exp("yolox-s").merge(["num_classes", "3"])
    m = build_model(s)
    ckpt = tmp_path / "yolox_s.pth"
    torch.save({"start_epoch": 3, "model": m.state_dict(), "optimizer": _stepped_optimizer(m, s).state_dict()}, ckpt)
    argv = ["--name", "yolox-nano", "--device", "cpu", "--synthetic", "--synthetic-images", "16", "--synthetic-size",
            "64", "--batch-size", "8", "--resume", "--ckpt", str(ckpt), "num_classes", "3", "input_size", "64,64",
            "test_size", "64,64", "data_num_workers", "0", "output_dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot resume from" in err and "yolox_s.pth" in err and "--ckpt without --resume" in err
    torch.save({"model": build_model(get_exp("yolox-nano").merge(["num_classes", "3"])).state_dict()}, ckpt)
    assert main(argv) == 2
    assert "has no 'optimizer' entry" in capsys.readouterr().err


@pytest.mark.parametrize("k", [0, 1])
def test_cv2_preproc_equals_megvii_valtransform(ref, k):
    """--preproc cv2 / --legacy make the evaluation input exactly as Megvii's ValTransform does."""
    pytest.importorskip("cv2")
    from yolox_gaudi.data import megvii_preproc

    case = ref["preproc"][k]
    bgr = np.array(case["bgr"], np.uint8)
    out, r = megvii_preproc(bgr, tuple(case["size"]))
    np.testing.assert_array_equal(out, np.array(case["out"], np.float32))
    assert r == min(case["size"][0] / bgr.shape[0], case["size"][1] / bgr.shape[1])
    leg, _ = megvii_preproc(bgr, tuple(case["size"]), legacy=True)
    np.testing.assert_allclose(leg, np.array(case["legacy"], np.float32), rtol=0, atol=1e-6)
