"""The QCDQ export as a real 4-bit file, and as a deploy file with the weights folded back to float.

Brevitas' QCDQ graph keeps every quantized weight as an fp32 initializer and quantizes it at every run:
``QuantizeLinear(W, s, zp) -> Clip(-7, 7) -> DequantizeLinear(., s, zp) -> Conv``. So the file is as big as
the float one, and the Q/Clip/DQ work is redone on each call. From that file (measured sizes in the README):

- ``to_int4``: each chain becomes ``DequantizeLinear(W_int4, s, zp_int4, axis=0)``, with the codes stored as
  ONNX ``INT4`` (two per byte). INT4 needs opset 21, so the graph is converted with ``onnx.version_converter``.
  ONNX Runtime runs it, and its outputs equal the QCDQ file's (tested: bit for bit on the smoke model).
- ``to_folded``: each chain becomes one fp32 initializer, holding the dequantized weights ``(code - zp) * s``,
  which are the numbers the QCDQ graph computes. This is the baseline's graph and speed, with 4-bit values
  inside. Outputs equal the QCDQ file's up to float rounding in the conv kernels.

The codes are recomputed exactly as ``QuantizeLinear`` does: round half to even, saturate to int8, then the
chain's ``Clip``. The metadata of the source file (the evaluator's contract and letterbox) is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INT4_OPSET = 21


def _chains(graph):
    """(QuantizeLinear, Clip, DequantizeLinear) node triples whose weight is an initializer."""
    inits = {i.name for i in graph.initializer}
    users: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    out = []
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] not in inits:
            continue
        (c,) = users[q.output[0]]
        (d,) = users[c.output[0]]
        if c.op_type != "Clip" or d.op_type != "DequantizeLinear":
            raise ValueError(f"{q.name}: expected QuantizeLinear -> Clip -> DequantizeLinear, got {c.op_type} -> "
                             f"{d.op_type}")
        out.append((q, c, d))
    return out


def _codes(arrays: dict, q, c) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 codes, scale, int zero point) of one chain, as QuantizeLinear + Clip compute them."""
    w, s, zp = (arrays[q.input[k]] for k in range(3))
    axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
    shape = [1] * w.ndim
    shape[axis] = -1
    codes = np.clip(np.rint(w / s.reshape(shape)) + zp.astype(np.int32).reshape(shape), -128, 127)
    codes = np.clip(codes, int(arrays[c.input[1]]), int(arrays[c.input[2]])).astype(np.int8)
    return codes, s.reshape(shape), zp.astype(np.int32).reshape(shape)


def _rewrite(src: str | Path, dst: str | Path, kind: str) -> Path:
    import onnx
    from onnx import helper, numpy_helper, version_converter

    model = onnx.load(str(src))
    g = model.graph
    chains = _chains(g)
    if not chains:
        raise ValueError(f"{src}: no weight QuantizeLinear -> Clip -> DequantizeLinear chain (not a QCDQ export)")
    arrays = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    replace: dict[int, object] = {}      # id(DequantizeLinear) -> its replacement node (int4)
    rename: dict[str, str] = {}          # DequantizeLinear output -> folded initializer (float)
    drop, extra = set(), []
    for q, c, d in chains:
        codes, scale, zp = _codes(arrays, q, c)
        drop |= {id(q), id(c), id(d)}   # by identity: exported node names may be empty
        if kind == "float":
            w = ((codes.astype(np.int32) - zp).astype(np.float32) * scale.astype(np.float32)).astype(np.float32)
            extra.append(numpy_helper.from_array(w, q.input[0] + "_dequantized"))
            rename[d.output[0]] = extra[-1].name
        else:
            wq = helper.make_tensor(q.input[0] + "_int4", onnx.TensorProto.INT4, codes.shape, codes.flatten().tolist())
            zq = helper.make_tensor(q.input[0] + "_zp_int4", onnx.TensorProto.INT4, [zp.size],
                                    zp.flatten().tolist())
            extra += [wq, zq]
            axis = next((a.i for a in d.attribute if a.name == "axis"), 1)
            replace[id(d)] = helper.make_node("DequantizeLinear", [wq.name, d.input[1], zq.name], [d.output[0]],
                                               name=d.name + "_int4", axis=axis)
    nodes = [replace.get(id(n), n) for n in g.node if id(n) not in drop or id(n) in replace]
    for n in nodes:
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used] + [t for t in extra if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    if kind == "int4":
        model = version_converter.convert_version(model, INT4_OPSET)
    onnx.checker.check_model(model)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(dst)
    return dst


def to_int4(qcdq: str | Path, out: str | Path) -> Path:
    """``qcdq`` -> ``out`` with INT4 weight initializers + DequantizeLinear (opset 21)."""
    return _rewrite(qcdq, out, "int4")


def to_folded(qcdq: str | Path, out: str | Path) -> Path:
    """``qcdq`` -> ``out`` with the dequantized weights as float initializers (the deploy file)."""
    return _rewrite(qcdq, out, "float")


def int4_weights(path: str | Path) -> int:
    """Number of INT4 initializers in an ONNX file."""
    import onnx

    return sum(i.data_type == onnx.TensorProto.INT4 for i in onnx.load(str(path)).graph.initializer)


def latency_ms(path: str | Path, imgsz: int, runs: int = 20, warmup: int = 3) -> float:
    """Mean ``session.run`` ms at batch 1 on a fixed random input (CPU EP), for the summary's file table."""
    import time

    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        sess.run(None, {name: x})
    t = time.perf_counter()
    for _ in range(runs):
        sess.run(None, {name: x})
    return (time.perf_counter() - t) * 1e3 / runs
