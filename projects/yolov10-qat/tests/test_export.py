"""ONNX parity for both exports (ORT CPU vs PyTorch) and the QCDQ structure of the QAT export."""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import pytest
import torch
from torch import nn

from yolov10_qat.export import count_qcdq, export_float_onnx, export_qcdq_onnx, prepare_for_export
from yolov10_qat.quant import layer_bits, quantize_model, quantized_layers

IMGSZ = 96


def _randomise(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and head biases: a fresh model's outputs are nearly constant, which would make
    any parity check pass."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
        if isinstance(m, nn.Conv2d) and m.bias is not None and m.weight.shape[0] != 1 and m.weight.requires_grad:
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g))
    return model


@pytest.fixture(scope="module", params=["baseline", "qat"])
def exported(request, float_model, tmp_path_factory):
    """(kind, prepared torch model with the pre-top-k head, ONNX path of the same)."""
    model = _randomise(deepcopy(float_model))
    if request.param == "qat":
        quantize_model(model, layer_bits(model, "w4"))
    model = prepare_for_export(model)
    model.model[-1].postprocess = lambda y: y  # compare before top-k: ties in a top-300 may order differently
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    (export_qcdq_onnx if request.param == "qat" else export_float_onnx)(model, path, IMGSZ)
    return request.param, model, path


def test_ort_matches_torch(exported):
    import onnxruntime as ort

    kind, model, path = exported
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": x.numpy()})[0]  # dynamic batch: 2 works
    assert out.shape == ref.shape == (2, (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2, 4 + 3)
    boxes, scores = ref[..., :4], ref[..., 4:]
    assert boxes.std() > 1.0 and scores.std() > 1e-3  # the outputs vary: the comparison below means something
    np.testing.assert_allclose(out[..., :4], boxes, atol=1e-2 * max(1.0, float(np.abs(boxes).max()) / 100))
    np.testing.assert_allclose(out[..., 4:], scores, atol=1e-4)


def test_qcdq_chain_per_quantized_layer(exported):
    import onnx

    kind, model, path = exported
    counts = count_qcdq(path)
    if kind == "baseline":
        assert counts["QuantizeLinear"] == counts["DequantizeLinear"] == 0
        return
    n_quant = len(quantized_layers(model))  # after fusing: the one-to-many branch is gone
    assert n_quant == 83
    assert counts["QuantizeLinear"] == counts["Clip"] == counts["DequantizeLinear"] == n_quant
    assert counts["Conv"] == n_quant + 1  # + the float DFL conv
    g = onnx.load(str(path)).graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}

    def value(name):
        if name in inits:
            return onnx.numpy_helper.to_array(inits[name])
        return onnx.numpy_helper.to_array(consts[name].attribute[0].t)

    chains = 0
    for conv in (n for n in g.node if n.op_type == "Conv"):
        dq = producer.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        clip = producer[dq.input[0]]
        q = producer[clip.input[0]]
        assert clip.op_type == "Clip" and q.op_type == "QuantizeLinear"
        assert (float(value(clip.input[1])), float(value(clip.input[2]))) == (-7.0, 7.0)  # int4, narrow range
        assert value(dq.input[1]).ndim == 1  # per output channel scales (axis 0)
        chains += 1
    assert chains == n_quant


def test_e2e_export_output_contract(float_model, tmp_path):
    """The real head (with top-k): [N, 300, 6] for a dynamic batch, scores sorted, classes in range."""
    import onnxruntime as ort

    model = prepare_for_export(_randomise(deepcopy(float_model)))
    size = 128  # 336 anchors >= max_det 300 (at 96 px there are only 189, and K = min(300, anchors))
    path = export_float_onnx(model, tmp_path / "e2e.onnx", size)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    out = sess.run(None, {"images": x})[0]
    assert out.shape == (2, 300, 6)
    assert np.all(np.diff(out[..., 4], axis=1) <= 1e-6)
    assert set(np.unique(out[..., 5]).tolist()) <= {0.0, 1.0, 2.0}
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.sort(out[..., 4], axis=1), np.sort(ref[..., 4], axis=1), atol=1e-4)
