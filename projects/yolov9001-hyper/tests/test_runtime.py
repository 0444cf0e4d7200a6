"""attach_runtime: strides from a forward, runtime fields, decoder and postprocessor from the config."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolov9001.core.config import get_config
from yolov9001.core.runtime import attach_runtime
from yolov9001.models import HyperYOLO
from yolov9001.utils.boxes import DFLDecoder


@pytest.mark.parametrize("imgsz", [64, 96, 160])
def test_strides_and_fields(imgsz):
    model = HyperYOLO("n", nc=5)
    cfg = get_config(hyp={"dfl_tau": 0.5, "conf_thresh": 0.2, "iou_thresh": 0.5, "post_topk": 7,
                          "class_agnostic": True})
    attach_runtime(model, imgsz, cfg)
    assert model.strides == (8, 16, 32) == model.detect.strides
    assert model.detect.last_shapes == tuple((imgsz // s, imgsz // s) for s in (8, 16, 32))
    assert (model.nc, model.reg_max, model.detect_layer) == (5, 16, len(model.model) - 1)
    assert isinstance(model.decoder, DFLDecoder) and model.decoder.tau == 0.5
    pp = model.postprocessor
    assert (pp.conf_thresh, pp.iou_thresh, pp.post_topk, pp.class_agnostic) == (0.2, 0.5, 7, True)
    assert model.training  # the stride forward ran in eval mode and restored the mode


def test_reattach_updates_decoder_in_place():
    model = HyperYOLO("n", nc=2)
    attach_runtime(model, 64)
    dec = model.decoder
    attach_runtime(model, 96, get_config(hyp={"dfl_tau": 2.0}))
    assert model.decoder is dec and dec.tau == 2.0


def test_bn_statistics_untouched_by_stride_inference():
    model = HyperYOLO("n", nc=2)
    before = model.model[0].bn.running_mean.clone()
    attach_runtime(model, 64)
    assert torch.equal(before, model.model[0].bn.running_mean)


def test_model_without_detect_is_a_clear_error():
    with pytest.raises(TypeError, match="no Detect head"):
        attach_runtime(nn.Sequential(nn.Conv2d(3, 3, 1)), 64)


def test_dfl_decode_round_trip():
    """ltrb targets -> two-hot DFL logits -> decoded boxes == the original boxes."""
    from yolov9001.utils.boxes import bbox2dist, dist2bbox

    reg = 16
    dec = DFLDecoder(reg, (8,), nc=1)
    anchors = torch.tensor([[4.5, 4.5], [10.5, 3.5]])
    boxes = torch.tensor([[1.0, 2.0, 9.0, 12.0], [6.0, 0.5, 20.0, 7.25]])  # grid units
    ltrb = bbox2dist(anchors, boxes, reg)
    lo = ltrb.floor().long()
    w_hi = ltrb - lo
    probs = torch.zeros(2, 4, reg)
    probs.scatter_(-1, lo[..., None], (1 - w_hi)[..., None])
    probs.scatter_add_(-1, (lo + 1).clamp_max(reg - 1)[..., None], w_hi[..., None])
    logits = probs.clamp_min(1e-12).log().view(1, 2, 4 * reg)
    back = dist2bbox(dec.distances(logits)[0], anchors)
    torch.testing.assert_close(back, boxes, atol=1e-4, rtol=0)
