"""Layer selection and the Brevitas swap: counts, DFL, first/last layers, int4 levels, strip/restore."""

from __future__ import annotations

import math
from copy import deepcopy

import pytest
import torch
from torch import nn

from yolov10_qat.quant import (first_and_last_convs, integer_codes, layer_bits, quantize_model, quantized_layers,
                               strip_quant)


@pytest.fixture(scope="module", params=["w4", "w4-fl8"])
def quantized(request, float_model):
    model = deepcopy(float_model)
    bits = layer_bits(model, request.param)
    quantize_model(model, bits)
    return request.param, model, bits


def test_replacement_count_and_dfl(quantized, float_model):
    from brevitas.nn import QuantConv2d

    scheme, model, bits = quantized
    convs = [n for n, m in float_model.named_modules() if isinstance(m, nn.Conv2d)]
    q = [n for n, m in model.named_modules() if isinstance(m, QuantConv2d)]
    assert len(convs) == 108  # yolov10n: every conv of backbone, neck and both heads, plus DFL
    assert len(q) == len(convs) - 1 == len(bits)
    dfl = model.get_submodule("model.23.dfl.conv")
    assert type(dfl) is nn.Conv2d and "model.23.dfl.conv" not in q
    assert torch.equal(dfl.weight.flatten(), torch.arange(16, dtype=dfl.weight.dtype))  # the integral, intact
    # no input/output/bias quantization: W4A16 is weight-only
    for name in q:
        layer = model.get_submodule(name)
        assert not layer.input_quant.is_quant_enabled and not layer.output_quant.is_quant_enabled
        assert not layer.bias_quant.is_quant_enabled


def test_scheme_bit_widths(quantized):
    scheme, model, bits = quantized
    got = quantized_layers(model)
    assert got == bits
    ends = first_and_last_convs(model)
    assert "model.0.conv" in ends and "model.23.one2one_cv3.2.2" in ends and "model.23.cv2.0.2" in ends
    assert len(ends) == 13  # first conv + 4 branches x 3 scales
    for name, b in got.items():
        assert b == (8 if scheme == "w4-fl8" and name in ends else 4), name
    assert sum(b == 8 for b in got.values()) == (13 if scheme == "w4-fl8" else 0)


def test_quantized_weights_have_at_most_16_levels_per_channel(quantized):
    scheme, model, bits = quantized
    from brevitas.nn import QuantConv2d

    for name, layer in model.named_modules():
        if not isinstance(layer, QuantConv2d):
            continue
        with torch.no_grad():
            qw = layer.quant_weight()
        codes = integer_codes(layer, qw).flatten(1)  # (out_channels, k)
        b = bits[name]
        limit = 2 ** (b - 1) - 1  # narrow range: -7..7 at 4 bit, -127..127 at 8 bit
        assert codes.abs().max() <= limit, name
        assert qw.scale.shape == (layer.out_channels, 1, 1, 1)  # per output channel
        assert torch.allclose(qw.value, codes.view_as(qw.value) * qw.scale)  # value is exactly code * scale
        if b == 4:  # distinct values per output channel, vectorised (a sorted row changes value at each new level)
            levels = (codes.sort(dim=1).values.diff(dim=1) != 0).sum(dim=1) + 1
            assert int(levels.max()) <= 16, f"{name}: {int(levels.max())} levels"
            assert int(levels.max()) > 2  # real int4 use, not a degenerate binary/ternary grid


def test_fake_quant_changes_the_forward(float_model):
    # a quantizer that did nothing would pass the tests above on a model whose weights are already on the grid
    model = deepcopy(float_model).eval()
    q = deepcopy(float_model)
    quantize_model(q, layer_bits(q, "w4"))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():  # the first two layers: a random-init head's output is nearly constant
        a, b = model.model[1](model.model[0](x)), q.eval().model[1](q.model[0](x))
    assert not torch.allclose(a, b, atol=1e-3)
    layer = q.get_submodule("model.2.cv1.conv")
    assert not torch.equal(layer.quant_weight().value, layer.weight)


def test_strip_and_restore_round_trip(float_model):
    q = deepcopy(float_model)
    bits = layer_bits(q, "w4-fl8")  # both bit widths in one model
    quantize_model(q, bits)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = q.eval()(x)[0]
    stripped = deepcopy(q)
    assert strip_quant(stripped) == bits
    assert quantized_layers(stripped) == {}
    assert stripped.state_dict().keys() == q.state_dict().keys()
    import io

    buf = io.BytesIO()
    torch.save(stripped, buf)  # a stripped model pickles (a Brevitas one does not: see the next test)
    quantize_model(stripped, bits)
    with torch.no_grad():
        assert torch.equal(stripped.eval()(x)[0], ref)


def test_brevitas_model_does_not_pickle(float_model):
    # the reason for strip/restore: if brevitas ever pickles, the workaround can go
    import io

    q = deepcopy(float_model)
    quantize_model(q, layer_bits(q, "w4"))
    with pytest.raises(Exception, match="[Pp]ickl"):
        torch.save(q, io.BytesIO())


def test_unknown_scheme_and_layer_are_refused(float_model):
    with pytest.raises(ValueError, match="scheme"):
        layer_bits(float_model, "w3")
    with pytest.raises(ValueError, match="not float nn.Conv2d"):
        quantize_model(deepcopy(float_model), {"model.0.nope": 4})


def test_quant_report_columns_levels_and_errors_match_the_tensors(quantized, tmp_path):
    """quant_report.csv: one row per quantized conv; its level counts, MSE and scales recomputed here from the
    layer's own tensors; the five worst by relative MSE; a PNG."""
    from brevitas.nn import QuantConv2d
    from PIL import Image

    from yolov10_qat.quant_report import COLUMNS, read_report, write_quant_report

    scheme, model, bits = quantized
    rep = write_quant_report(model, tmp_path, title=scheme)
    rows = read_report(rep["csv"])
    assert list(rows[0]) == COLUMNS and [r["layer"] for r in rows] == list(bits)
    assert all(math.isfinite(r[c]) for r in rows for c in COLUMNS if c != "layer")
    assert {r["layer"]: r["bits"] for r in rows} == bits
    for r in rows[::17] + [rows[-1]]:       # a spread of layers, checked against the tensors directly
        layer = model.get_submodule(r["layer"])
        assert isinstance(layer, QuantConv2d)
        with torch.no_grad():
            qw = layer.quant_weight()
            err = qw.value - layer.weight
        codes = integer_codes(layer, qw).flatten(1)
        per_channel = torch.tensor([len(torch.unique(c)) for c in codes])
        assert (r["levels_min"], r["levels_max"]) == (int(per_channel.min()), int(per_channel.max()))
        assert r["levels_max"] <= r["grid_levels"] == 2 ** r["bits"] - 1
        assert r["mse"] == pytest.approx(float(err.pow(2).mean()), rel=1e-4)
        assert r["max_abs_err"] == pytest.approx(float(err.abs().max()), rel=1e-4)
        assert r["scale_min"] == pytest.approx(float(qw.scale.min()), rel=1e-4)
    ranked = sorted(rows, key=lambda r: -r["rel_mse"])[:5]
    assert [w["layer"] for w in rep["worst"]] == [r["layer"] for r in ranked]
    if scheme == "w4-fl8":   # 8-bit layers keep far more of their weight than 4-bit ones
        by_bits = {b: [r["rel_mse"] for r in rows if r["bits"] == b] for b in (4, 8)}
        assert max(by_bits[8]) < min(by_bits[4])
    with Image.open(rep["png"]) as im:
        assert im.format == "PNG" and im.size[0] >= 800
