"""Every model size: parameter count, Megvii state-dict names/shapes, output shapes (timm style)."""

import gzip
import json
from pathlib import Path

import pytest
import torch

from yolox_gaudi.config import EXPS, get_exp
from yolox_gaudi.model import build_model, load_pretrained

TABLE = json.loads(gzip.open(Path(__file__).parent / "data" / "megvii_state_dicts.json.gz", "rt").read())
# Published counts (YOLOX 0.3.0 / README): S is the one the issue quotes.
PARAMS = {"yolox-nano": 912_159, "yolox-tiny": 5_055_855, "yolox-s": 8_968_255, "yolox-m": 25_326_495,
          "yolox-l": 54_208_895, "yolox-x": 99_071_455}


@pytest.mark.parametrize("name", list(EXPS))
def test_model_size(name):
    model = build_model(get_exp(name))
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name] == TABLE[name]["params"]
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = TABLE[name]["state_dict"]
    assert sorted(set(ref) - set(ours)) == [] and sorted(set(ours) - set(ref)) == []
    assert {k: v for k, v in ours.items() if ref[k] != v} == {}

    # Output shapes at a small side: 3 levels of (S/8)^2 + (S/16)^2 + (S/32)^2 anchors.
    s = 64
    anchors = (s // 8) ** 2 + (s // 16) ** 2 + (s // 32) ** 2
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, s, s) * 255)
    assert out.shape == (1, anchors, 85)
    assert torch.isfinite(out).all()
    assert ((out[..., 4:] >= 0) & (out[..., 4:] <= 1)).all()   # sigmoid scores at inference


def test_training_outputs_and_decode():
    exp = get_exp("yolox-nano")
    exp.num_classes = 3
    model = build_model(exp).train()
    preds, raw, grid = model(torch.rand(2, 3, 64, 96) * 255)
    anchors = 8 * 12 + 4 * 6 + 2 * 3
    assert preds.shape == (2, anchors, 8) and raw.shape == (2, anchors, 4) and grid.shape == (anchors, 3)
    # decode: xy = (raw + grid) * stride, wh = exp(raw) * stride
    torch.testing.assert_close(preds[..., :2], (raw[..., :2] + grid[:, :2]) * grid[:, 2:])
    torch.testing.assert_close(preds[..., 2:4], torch.exp(raw[..., 2:4]) * grid[:, 2:])
    assert set(grid[:, 2].tolist()) == {8.0, 16.0, 32.0}
    # prior: obj/cls logits start at log(0.01/0.99)
    assert torch.allclose(model.head.obj_preds[0].bias, torch.full((1,), -4.59512), atol=1e-4)


def test_load_pretrained_skips_other_head_shapes():
    ref = build_model(get_exp("yolox-nano"))          # 80 classes, like an official checkpoint
    exp = get_exp("yolox-nano")
    exp.num_classes = 3
    model = build_model(exp)
    skipped = load_pretrained(model, ref.state_dict())
    assert skipped == [f"head.cls_preds.{i}.{p}" for i in range(3) for p in ("bias", "weight")]
    stem = "backbone.backbone.stem.conv.conv.weight"
    torch.testing.assert_close(model.state_dict()[stem], ref.state_dict()[stem])


def test_decode_is_fp32_under_bf16_autocast():
    """Under bf16 autocast the head's outputs are bf16; the decode must not be (8 significant bits round a
    centre near 600 px to a multiple of 4 px). Decoded boxes are fp32 and equal the fp32 decode of the
    same raw outputs exactly."""
    exp = get_exp("yolox-nano")
    exp.num_classes = 3
    torch.manual_seed(0)
    model = build_model(exp).train()
    x = torch.rand(1, 3, 640, 640) * 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        preds, raw, grid = model(x)
    assert preds.dtype == torch.float32
    assert torch.equal(preds[..., :2], (raw[..., :2].float() + grid[:, :2]) * grid[:, 2:])
    # what a bf16 decode would have given: measurably off at this size
    bf16_xy = (raw[..., :2].bfloat16() + grid[:, :2].bfloat16()) * grid[:, 2:].bfloat16()
    assert (bf16_xy.float() - preds[..., :2]).abs().max() >= 1.0
