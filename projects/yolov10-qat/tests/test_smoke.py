"""`run --preset smoke --data synthetic` end to end: every artifact of the run-root contract, finite metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CONTRACT = [
    "run.json", "state.json", "dataset.yaml", "provenance.json", "summary.md",
    "baseline-coco/metrics.json", "qat-w4a16-coco/metrics.json", "samples/baseline.png", "samples/qat.png",
    "qat-w4a16/quant_report.csv", "qat-w4a16/quant_report.png",
    *[f"{m}/{f}" for m in ("fp16", "qat-w4a16")
      for f in ("args.yaml", "config.json", "curves/loss.csv", "curves/loss.png", "weights/best.pt",
                "weights/last.pt", "weights/best.safe.pt", "weights/last.safe.pt", "weights/checksums.json",
                "logs/train.jsonl", "logs/eval.jsonl")],
]


def test_every_artifact_of_the_contract(smoke_run):
    missing = [p for p in CONTRACT if not (smoke_run / p).is_file()]
    assert missing == []
    for m in ("fp16", "qat-w4a16"):
        assert list((smoke_run / m / "tb").glob("events.out.tfevents.*"))
        cfg = json.loads((smoke_run / m / "config.json").read_text())
        # the smoke recipe (configs/hyp.smoke.yaml) is what ultralytics got
        assert cfg["seed"] == 0 and cfg["ultralytics_args"]["optimizer"] == "AdamW"
        assert cfg["ultralytics_args"]["lr0"] == 0.002 and cfg["ultralytics_args"]["close_mosaic"] == 5
        assert cfg["ultralytics_args"]["nms"] is False
        # both final files are recorded as this run's own, stripped (finished) checkpoints
        from yolov10_qat import safe_ckpt

        for f in ("best.pt", "last.pt"):
            assert safe_ckpt.recorded(smoke_run / m / "weights" / f)["finished"] is True
    onnx = sorted(p.name for p in (smoke_run / "onnx").glob("*.onnx"))
    assert onnx == ["yolov10n-baseline-128.onnx", "yolov10n-qat-w4-folded-128.onnx", "yolov10n-qat-w4-int4-128.onnx",
                    "yolov10n-qat-w4-qcdq-128.onnx"]  # scheme in the file name


def test_int4_and_folded_files_compute_what_the_qcdq_file_does(smoke_run):
    """INT4 (opset 21) equals QCDQ bit for bit; folded float equals it up to conv rounding (compared as detection
    sets: the e2e output is a top-k, so a 1e-7 score difference can swap two rows); INT4 is < 1/4 the size."""
    import onnx
    import onnxruntime as ort

    from yolov10_qat.int4 import int4_weights

    d = smoke_run / "onnx"
    qcdq, int4, folded = (d / f"yolov10n-qat-w4-{k}-128.onnx" for k in ("qcdq", "int4", "folded"))
    n_chains = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(qcdq)).graph.node)
    assert int4_weights(int4) == 2 * n_chains == 166                    # codes + zero point per chain
    assert onnx.load(str(int4)).opset_import[0].version == 21
    assert not any(n.op_type in ("QuantizeLinear", "Clip") for n in onnx.load(str(folded)).graph.node)
    assert int4.stat().st_size < qcdq.stat().st_size / 4
    x = np.random.default_rng(3).random((2, 3, 128, 128), dtype=np.float32)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]  # noqa: E731
    ref = run(qcdq)
    np.testing.assert_array_equal(run(int4), ref)
    got = run(folded)
    for k in range(len(x)):
        np.testing.assert_allclose(np.sort(got[k, :, 4]), np.sort(ref[k, :, 4]), atol=1e-5)
        for row in got[k][got[k, :, 4] > 0.01]:      # every confident detection is in the QCDQ output
            same = ref[k][ref[k, :, 5] == row[5]]
            assert np.abs(same[:, :5] - row[:5]).sum(1).min() < 1e-3
    text = (smoke_run / "summary.md").read_text()
    assert "Model files" in text and "yolov10n-qat-w4-int4-128.onnx" in text


def test_metrics_are_finite_and_comparable(smoke_run):
    ms = [json.loads((smoke_run / d / "metrics.json").read_text()) for d in ("baseline-coco", "qat-w4a16-coco")]
    for m in ms:
        assert m["contract"] == "e2e" and m["provider"] == "CPUExecutionProvider"
        assert m["num_images"] == 32 and m["letterbox"]["size"] == 128 and m["letterbox"]["pad_value"] == 114
        for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            assert math.isfinite(m["coco"][k])
        assert m["latency"]["inference_ms"]["mean"] > 0
    assert ms[0]["dataset"]["splits"] == ms[1]["dataset"]["splits"]  # same images (paths, counts, hashes)
    assert ms[0]["settings"] == ms[1]["settings"]


def test_both_smoke_models_learn(smoke_run):
    """Half the AP50 measured on the smoke (README: baseline 0.255, QAT 0.161 through ONNX Runtime): a broken
    loss, assignment, quantizer or export drops a model back to the ~0 the 2-epoch smoke used to give."""
    fp, qat = (json.loads((smoke_run / d / "metrics.json").read_text())["coco"] for d in ("baseline-coco", "qat-w4a16-coco"))
    assert fp["AP50"] >= 0.127, fp
    assert qat["AP50"] >= 0.080, qat


def test_loss_curves_have_every_step(smoke_run):
    for m in ("fp16", "qat-w4a16"):
        rows = (smoke_run / m / "curves" / "loss.csv").read_text().splitlines()
        assert rows[0].startswith("step,epoch,loss/box_loss")
        assert len(rows) - 1 == 30 * 12  # 30 epochs x 12 batches of 16 (192 images)
        assert all(math.isfinite(float(v)) for r in rows[1:] for v in r.split(",")[2:])


def test_summary_tables(smoke_run):
    text = (smoke_run / "summary.md").read_text()
    for needle in ("| AP ", "| AP50 ", "| APl ", "diff (qat - baseline)", "CPUExecutionProvider", "p90 ms",
                   "Scheme `w4`", "107 quantized convs", "'QuantizeLinear': 83", "train2017 (train)", "lr0",
                   "fp16/tb", "qat-w4a16/curves/loss.png", "samples/baseline.png", "samples/qat.png",
                   "Per-layer quantization (QAT model)", "qat-w4a16/quant_report.csv", "(107 layers)"):
        assert needle in text, needle


def test_exported_models_match_their_checkpoints(smoke_run):
    """ORT on the exported files vs PyTorch on the reloaded checkpoints (top-300 scores, order-free)."""
    import onnxruntime as ort
    import torch

    from yolov10_qat.export import prepare_for_export
    from yolov10_qat.trainer import load_float_checkpoint, load_qat_checkpoint

    x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    for loader, name in ((load_float_checkpoint, "yolov10n-baseline-128.onnx"),
                         (load_qat_checkpoint, "yolov10n-qat-w4-qcdq-128.onnx")):
        model = prepare_for_export(loader(smoke_run / ("fp16" if "baseline" in name else "qat-w4a16") /
                                          "weights" / "best.pt")[0])
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out = ort.InferenceSession(str(smoke_run / "onnx" / name), providers=["CPUExecutionProvider"]).run(
            None, {"images": x})[0]
        assert out.shape == ref.shape == (1, 300, 6)
        np.testing.assert_allclose(np.sort(out[0, :, 4]), np.sort(ref[0, :, 4]), atol=1e-4)


def test_resume_of_a_finished_run_does_nothing_but_the_summary(smoke_run):
    from yolov10_qat.cli import main

    before = (smoke_run / "qat-w4a16" / "weights" / "best.pt").stat().st_mtime_ns
    assert main(["run", "--resume", str(smoke_run)]) == 0
    assert (smoke_run / "qat-w4a16" / "weights" / "best.pt").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="epochs"):  # a resumed run keeps its recorded recipe
        main(["run", "--resume", str(smoke_run), "--epochs", "5"])


def test_letterbox_matches_ultralytics():
    """Common's ULTRALYTICS spec and ultralytics' own LetterBox place the image identically (centred, pad 114);
    pixel values differ only by the resampling filter (PIL bilinear vs cv2)."""
    from yolov10_qat._env import ultralytics_env

    ultralytics_env()
    from ultralytics.data.augment import LetterBox
    from yolo_common.preprocess import ULTRALYTICS, letterbox

    rng = np.random.default_rng(0)
    for h, w in ((96, 160), (160, 96), (128, 128), (101, 77)):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        ours, meta = letterbox(img, ULTRALYTICS.with_size(128))
        theirs = LetterBox(new_shape=(128, 128), auto=False, scale_fill=False, scaleup=True, center=True)(
            image=img[:, :, ::-1].copy())[:, :, ::-1]  # ultralytics works in BGR, its loader flips to RGB
        theirs = theirs.transpose(2, 0, 1).astype(np.float32) / 255
        pad_ours = np.rint(ours * 255) == 114  # compare in pixel units: x/255 and x*(1/255) differ by an ulp
        pad_theirs = np.rint(theirs * 255) == 114
        rows = ~pad_ours.all(axis=(0, 2))
        assert (rows == ~pad_theirs.all(axis=(0, 2))).all()  # same vertical padding
        cols = ~pad_ours.all(axis=(0, 1))
        assert (cols == ~pad_theirs.all(axis=(0, 1))).all()  # same horizontal padding
        assert np.abs(ours - theirs).mean() < 0.06  # only the resampling filter differs
