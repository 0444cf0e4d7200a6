"""tasks/compare.py on two tiny exported detectors (YOLOX-Nano and a 1/8-width YOLOv1, random init)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("models")
    from yolox_gaudi.config import get_exp
    from yolox_gaudi.export import export_onnx as export_yolox
    from yolox_gaudi.model import build_model

    names = ["circle", "square", "triangle"]
    exp = get_exp("yolox-nano").merge(["num_classes", "3", "test_size", "64,64", "test_conf", "1e-5"])
    torch.manual_seed(0)
    a = export_yolox(build_model(exp).eval(), exp, out / "runs" / "yolox" / "nano.onnx", names)
    from yolov1.export import export_onnx as export_yolov1
    from yolov1.model import build_detector

    meta = {"config": {"S": 2, "B": 2, "conf_threshold": -1e9}, "classes": names}
    b = export_yolov1(build_detector(2, 2, 3, width=0.125, hidden=32), meta, out / "yolov1.onnx")
    return out, a, b


@pytest.mark.slow
def test_compare_writes_the_table_and_the_plot(two_models, tmp_path):
    sys.path.insert(0, str(REPO / "tasks"))
    try:
        import compare
    finally:
        sys.path.remove(str(REPO / "tasks"))
    out_models, a, b = two_models
    # a run folder (searched recursively) and a file
    assert compare.main([str(out_models / "runs"), str(b), "--out", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["model"] for r in rows] == ["yolox/nano.onnx", f"{out_models.name}/yolov1.onnx"]
    assert rows[0]["input"] == "64x64" and rows[1]["input"] == "128x128"
    assert rows[0]["params"] > 500_000 and rows[1]["params"] > 10_000
    for r in rows:
        assert 0 <= r["AP50"] <= 1 and r["latency_ms"] > 0 and r["provider"] == "CPUExecutionProvider"
    assert md.count("\n| ") >= 3 and "nano.onnx" in md and "yolov1.onnx" in md and "latency ms (p90)" in md
    from PIL import Image

    with Image.open(tmp_path / "cmp" / "compare.png") as im:
        assert im.format == "PNG" and im.size == (640, 440)


@pytest.mark.slow
def test_compare_skips_a_broken_model_and_keeps_same_named_ones_apart(two_models, tmp_path, capsys):
    import shutil

    sys.path.insert(0, str(REPO / "tasks"))
    try:
        import compare
    finally:
        sys.path.remove(str(REPO / "tasks"))
    _, a, _ = two_models
    for run in ("run-a", "run-b"):   # two smoke runs of one project: both export/yolox-nano.onnx
        (tmp_path / run / "export").mkdir(parents=True)
        shutil.copy(a, tmp_path / run / "export" / "yolox-nano.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    code = compare.main([str(tmp_path / "run-a"), str(tmp_path / "run-b"), str(tmp_path / "broken.onnx"),
                         "--out", str(tmp_path / "cmp"), "--batch", "2"])
    assert code == 3                                               # scored, but something was skipped
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["model"] for r in rows] == ["export/yolox-nano.onnx", "export/yolox-nano.onnx #2"]
    assert [Path(r["path"]).parts[-3] for r in rows] == ["run-a", "run-b"]
    assert rows[0]["AP"] == rows[1]["AP"]                          # the same model, scored twice
    assert len(list((tmp_path / "cmp" / "eval").iterdir())) == 2   # each its own eval folder
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "## Skipped" in md and "broken.onnx" in md and "at batch 2" in md and "#2" in md
    assert "skipped" in capsys.readouterr().err
    assert compare.main([str(tmp_path / "broken.onnx"), "--out", str(tmp_path / "cmp2")]) == 1


def test_compare_without_models_is_a_clear_error(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "tasks"))
    try:
        import compare
    finally:
        sys.path.remove(str(REPO / "tasks"))
    assert compare.main([str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no exported models" in capsys.readouterr().err
