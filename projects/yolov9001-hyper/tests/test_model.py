"""Hyper-YOLO model: parameter counts per scale, shapes, state-dict names, parity with the original."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from yolov9001.core.export import RawExport
from yolov9001.core.runtime import attach_runtime
from yolov9001.models import HyperYOLO

REF = Path(__file__).parent / "data" / "hyperyolo_reference.npz"

# Published / measured on iMoonLab/Hyper-YOLO bd4d2c4 at nc=80 (t and x: the fork's own yaml, measured).
PARAMS = {"n": 4_099_024, "s": 14_865_760, "m": 33_414_064, "l": 56_372_736, "t": 3_156_752}


@pytest.mark.parametrize("scale", sorted(PARAMS))
def test_parameter_count(scale):
    model = HyperYOLO(scale, nc=80)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[scale]


@pytest.mark.parametrize("scale,imgsz", [("n", 64), ("t", 96), ("s", 64)])
def test_forward_shapes(scale, imgsz):
    model = HyperYOLO(scale, nc=3)
    out = model(torch.rand(2, 3, imgsz, imgsz))
    assert [tuple(o.shape) for o in out] == [(2, 64 + 3, imgsz // s, imgsz // s) for s in (8, 16, 32)]


@pytest.fixture(scope="module")
def reference():
    return np.load(REF)


def test_fixture_names_commit(reference):
    assert str(reference["commit"]).startswith("bd4d2c4")


@pytest.mark.parametrize("scale", ["n", "s", "t", "l"])
def test_state_dict_names_and_shapes_match_original(reference, scale):
    model = HyperYOLO(scale, nc=80)
    ours = [f"{k}:{'x'.join(map(str, v.shape))}" for k, v in model.state_dict().items()]
    assert ours == list(reference[f"{scale}_keys"])
    assert sum(p.numel() for p in model.parameters()) == int(reference[f"{scale}_params"])


def _assert_matches(y, ref):
    """Boxes to 1e-5 relative, class scores to 5e-7 absolute (measured: 3e-6 / 9e-8 on every scale;
    a 10% change of the threshold moves the scores by 3e-6, so this tolerance sees it)."""
    torch.testing.assert_close(y[:, :4], ref[:, :4], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(y[:, 4:], ref[:, 4:], rtol=0, atol=5e-7)


def _raw_output(scale, threshold=None):
    from reference_weights import deterministic_state_dict, reference_input

    model = HyperYOLO(scale, nc=80, hyper_threshold=threshold)
    model.load_state_dict(deterministic_state_dict(model.state_dict()), strict=True)
    model.eval()
    attach_runtime(model, 160)
    with torch.no_grad():
        y = RawExport(model)(reference_input(1, 160, seed=0))
    return model, y


@pytest.mark.parametrize("scale", ["n", "s", "t", "l"])
def test_outputs_equal_original_on_same_weights(reference, scale):
    """The original's eval output (cx, cy, w, h px + sigmoid scores) on name-seeded weights, recorded by
    tools/record_hyperyolo_reference.py from the fork at bd4d2c4."""
    model, y = _raw_output(scale)
    ref = torch.from_numpy(reference[f"{scale}_y"])
    assert y.shape == ref.shape
    _assert_matches(y, ref)
    assert model.mean_hyperedge_size() == pytest.approx(float(reference[f"{scale}_hyperedge_mean"]))


def test_partial_hypergraph_equals_original(reference):
    """At the published thresholds these weights give a complete hypergraph; at the median distance about
    half the pairs are in: the threshold rule itself (strict <, Euclidean) is compared here."""
    thr = float(reference["n_sparse_threshold"])
    model, y = _raw_output("n", threshold=thr)
    assert 1 < float(reference["n_sparse_hyperedge_mean"]) < 100
    assert model.mean_hyperedge_size() == pytest.approx(float(reference["n_sparse_hyperedge_mean"]), abs=0.05)
    ref = torch.from_numpy(reference["n_sparse_y"])
    _assert_matches(y, ref)
    # a threshold 10% off would not have matched (the check can fail)
    _, y_other = _raw_output("n", threshold=thr * 0.9)
    with pytest.raises(AssertionError):
        _assert_matches(y_other, ref)


def test_hyper_threshold_config_key_reaches_module():
    from yolov9001.core.config import get_config
    from yolov9001.models import build_model

    cfg = get_config(hyp={"hyper_threshold": 3.5, "nc": 3})
    assert build_model(cfg.to_dict()).hyper_modules()[0].threshold == 3.5
    assert build_model(get_config(hyp={"nc": 3, "model_scale": "s"}).to_dict()).hyper_modules()[0].threshold == 8.0
