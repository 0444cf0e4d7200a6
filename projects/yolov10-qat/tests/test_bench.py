"""bench-qat plumbing on a tiny model (speed itself is measured by the bench task, never in tests)."""

from __future__ import annotations

import math


def test_bench_times_both_models_and_reports_a_ratio():
    from brevitas.nn import QuantConv2d

    from yolov10_qat.bench import build_pair, run_bench

    fp, q = build_pair("yolov10n.yaml", 3, "w4", "cpu")
    assert not any(isinstance(m, QuantConv2d) for m in fp.modules())
    assert sum(isinstance(m, QuantConv2d) for m in q.modules()) == 107  # the W4 side really is quantized
    rows = run_bench("yolov10n.yaml", "cpu", imgsz=64, batch=1, steps=1, warmup=0)
    assert [r["precision"] for r in rows] == ["fp32"]  # AMP only on CUDA
    r = rows[0]
    assert r["float_s"] > 0 and r["w4_s"] > 0
    assert math.isclose(r["ratio_w4_over_float"], r["w4_s"] / r["float_s"])
