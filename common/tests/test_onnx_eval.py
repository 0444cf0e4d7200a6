"""ONNX evaluator: decoders, sessions, metadata and the whole pipeline on tiny exported models."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolo_common.onnx_eval import (
    ImageDets,
    decode_e2e,
    decode_raw,
    detect_contract,
    evaluate_onnx,
    make_session,
    read_model_metadata,
    to_coco_results,
    write_model_metadata,
)
from yolo_common.preprocess import ULTRALYTICS, YOLOX, LetterboxMeta, LetterboxSpec, letterbox_boxes, letterbox_geometry

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

# Sparse, out-of-order-looking ids so an identity class->category map would fail the AP == 1 tests.
CATEGORIES = [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"}, {"id": 11, "name": "triangle"}]


# ----------------------------------------------------------------------------------------------
# helpers


def _write_coco(root: Path, images: list[dict], split: str = "val") -> Path:
    """A COCO-layout dataset: ``images`` = [{"w", "h", "boxes": xywh list, "cats": ids, "corrupt": bool}]."""
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    js = {"images": [], "annotations": [], "categories": CATEGORIES}
    for i, im in enumerate(images, start=1):
        name = f"{i:06d}.png"
        if im.get("corrupt"):
            (root / split / name).write_bytes(b"\x89PNG broken")
        else:
            Image.fromarray(rng.integers(0, 255, (im["h"], im["w"], 3), dtype=np.uint8)).save(root / split / name)
        js["images"].append({"id": 100 + i, "file_name": name, "width": im["w"], "height": im["h"]})
        for b, c in zip(im.get("boxes", []), im.get("cats", [])):
            js["annotations"].append({"id": len(js["annotations"]) + 1, "image_id": 100 + i, "category_id": c,
                                      "bbox": list(map(float, b)), "area": float(b[2] * b[3]), "iscrowd": 0})
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(js))
    return root


class _Const(torch.nn.Module):
    """Returns a fixed tensor whatever the input (the input still feeds the graph so it stays an input)."""

    def __init__(self, out: np.ndarray):
        super().__init__()
        self.register_buffer("out", torch.as_tensor(out, dtype=torch.float32))

    def forward(self, x):
        return self.out + 0.0 * x.mean()


class _Tiny(torch.nn.Module):
    """Random-weights raw-contract detector: [N, 4+nc, A] with cxcywh in pixels and sigmoid scores."""

    def __init__(self, nc: int = 3):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.SiLU(),
                                        torch.nn.Conv2d(8, 8, 3, 2, 1), torch.nn.SiLU(),
                                        torch.nn.Conv2d(8, 4 + nc, 1))

    def forward(self, x):
        p = self.body(x).flatten(2)  # (N, 4+nc, A)
        s = x.shape[-1]
        xy = p[:, :2].sigmoid() * s
        wh = p[:, 2:4].sigmoid() * s / 2 + 2
        return torch.cat([xy, wh, p[:, 4:].sigmoid()], 1)


def _export(model, path: Path, size: int, batch: int = 1, dynamic: bool = False) -> Path:
    x = torch.zeros(batch, 3, size, size)
    axes = {"images": {0: "batch", 2: "h", 3: "w"}, "out": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():  # the legacy exporter announces its own deprecation on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.eval(), (x,), str(path), input_names=["images"], output_names=["out"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def _gt_in_letterbox(im: dict, spec: LetterboxSpec) -> tuple[np.ndarray, np.ndarray]:
    meta, _, _ = letterbox_geometry(im["w"], im["h"], spec)
    xywh = np.asarray(im["boxes"], np.float64)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    k = np.array([[c["id"] for c in CATEGORIES].index(c) for c in im["cats"]])
    return letterbox_boxes(xyxy, meta), k


def _cheat_e2e(im: dict, spec: LetterboxSpec, k_rows: int = 10) -> np.ndarray:
    boxes, k = _gt_in_letterbox(im, spec)
    out = np.zeros((1, k_rows, 6), np.float32)
    out[0, :len(k), :4] = boxes
    out[0, :len(k), 4] = np.linspace(0.9, 0.5, len(k))
    out[0, :len(k), 5] = k
    return out


def _cheat_raw(im: dict, spec: LetterboxSpec, nc: int = 3) -> np.ndarray:
    boxes, k = _gt_in_letterbox(im, spec)
    n = len(k)
    # Each GT once exactly (score .9), once shifted by 1 px (score .6: NMS must eat it), plus 5
    # background anchors below conf. Anchors are shuffled so order carries no information.
    cxcywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
    shifted = cxcywh + [1, 1, 0, 0]
    cols = np.zeros((4 + nc, 2 * n + 5), np.float32)
    cols[:4, :n], cols[:4, n:2 * n] = cxcywh.T, shifted.T
    cols[:4, 2 * n:] = [[50], [50], [20], [20]]
    cols[4 + k, np.arange(n)] = 0.9
    cols[4 + k, n + np.arange(n)] = 0.6
    cols[4:, 2 * n:] = 1e-4
    perm = np.random.default_rng(0).permutation(cols.shape[1])
    return cols[None, :, perm]


LANDSCAPE = {"w": 200, "h": 120, "boxes": [[10, 20, 60, 40], [100, 10, 50, 90], [150, 60, 45, 50]], "cats": [7, 3, 11]}
PORTRAIT = {"w": 90, "h": 210, "boxes": [[5, 5, 40, 40], [30, 100, 55, 100]], "cats": [11, 11]}


# ----------------------------------------------------------------------------------------------
# decoders


def test_detect_contract():
    assert detect_contract((1, 300, 6)) == "e2e"
    assert detect_contract((1, 84, 8400)) == "raw"
    assert detect_contract((2, 6, 100)) == "raw"  # nc=2 raw model: last dim is anchors
    # DETR-style: logits [N, Q, C+1] beside boxes [N, Q, 4]; a 5-class model's logits end in 6 too
    assert detect_contract((2, 100, 6), (2, 100, 4)) == "set"
    assert detect_contract((1, 100, 92), (1, 100, 4)) == "set"
    assert detect_contract((1, 300, 6), (1, 50, 4)) == "e2e"   # a second output of another shape: not a set
    with pytest.raises(ValueError):
        detect_contract((84, 8400))


def test_cli_passes_label_and_overlap_options(monkeypatch, tmp_path):
    from yolo_common import onnx_eval

    seen = {}

    def fake(model, data, split, **kw):
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr(onnx_eval, "evaluate_onnx", fake)
    for argv, want in ((["--single-label", "--no-overlap"], (False, False)), (["--multi-label"], (True, True)),
                       ([], (None, True))):
        with pytest.raises(SystemExit):
            onnx_eval.main(["--model", "m.onnx", "--data", str(tmp_path), *argv])
        assert (seen["multi_label"], seen["overlap"]) == want, argv
    with pytest.raises(SystemExit):   # argparse: the two label options exclude each other
        onnx_eval.build_parser().parse_args(["--model", "m", "--data", "d", "--multi-label", "--single-label"])


def test_decode_e2e_filters_sorts_and_caps():
    out = np.zeros((2, 5, 6), np.float32)
    out[0, :4] = [[0, 0, 10, 10, 0.2, 1], [5, 5, 20, 20, 0.9, 0], [1, 1, 2, 2, 0.0005, 2], [3, 3, 9, 9, 0.5, 2.0]]
    d = decode_e2e(out, conf=0.001, max_det=2)
    assert len(d) == 2 and len(d[1].boxes) == 0
    np.testing.assert_allclose(d[0].scores, [0.9, 0.5])
    np.testing.assert_array_equal(d[0].classes, [0, 2])
    np.testing.assert_allclose(d[0].boxes, [[5, 5, 20, 20], [3, 3, 9, 9]])
    assert d[0].classes.dtype == np.int64 and d[0].boxes.dtype == np.float32
    assert len(decode_e2e(out, conf=0.001)[0].boxes) == 3


def _raw(cols: list[tuple], nc: int = 3) -> np.ndarray:
    """cols: (cx, cy, w, h, {class: score}) per anchor -> [1, 4+nc, A]."""
    out = np.zeros((1, 4 + nc, len(cols)), np.float32)
    for a, (cx, cy, w, h, sc) in enumerate(cols):
        out[0, :4, a] = cx, cy, w, h
        for c, s in sc.items():
            out[0, 4 + c, a] = s
    return out


def test_decode_raw_nms_suppresses_duplicate_keeps_other_class():
    out = _raw([
        (50, 50, 40, 40, {0: 0.9}),   # kept
        (51, 51, 40, 40, {0: 0.8}),   # same class, IoU ~0.9: suppressed
        (51, 50, 40, 40, {1: 0.7}),   # other class on top of it: kept
        (150, 150, 20, 20, {0: 0.6}),  # same class, far away: kept
        (10, 10, 5, 5, {2: 0.0005}),  # below conf
    ])
    (d,) = decode_raw(out, conf=0.001, iou=0.7)
    np.testing.assert_allclose(d.scores, [0.9, 0.7, 0.6])
    np.testing.assert_array_equal(d.classes, [0, 1, 0])
    np.testing.assert_allclose(d.boxes[0], [30, 30, 70, 70])  # cxcywh -> xyxy
    np.testing.assert_allclose(d.boxes[2], [140, 140, 160, 160])
    # A looser IoU threshold lets the duplicate through.
    (d2,) = decode_raw(out, conf=0.001, iou=0.95)
    assert len(d2.scores) == 4


def test_decode_raw_multi_label_and_caps():
    out = _raw([(50, 50, 40, 40, {0: 0.9, 2: 0.4}), (150, 50, 40, 40, {1: 0.3})])
    (d,) = decode_raw(out, conf=0.01)
    assert sorted(d.classes.tolist()) == [0, 1, 2]  # both labels of anchor 0 survive (different classes)
    (d,) = decode_raw(out, conf=0.01, multi_label=False)
    assert sorted(d.classes.tolist()) == [0, 1]
    (d,) = decode_raw(out, conf=0.01, max_det=1)
    assert d.scores.tolist() == pytest.approx([0.9])
    (d,) = decode_raw(out, conf=0.01, max_candidates=2)
    assert d.scores.tolist() == pytest.approx([0.9, 0.4])
    (d,) = decode_raw(out, conf=0.95)
    assert d.boxes.shape == (0, 4)


def test_decode_raw_batches_are_independent():
    a = _raw([(50, 50, 40, 40, {0: 0.9})])
    b = _raw([(51, 51, 40, 40, {0: 0.8})])
    d = decode_raw(np.concatenate([a, b]), conf=0.001)
    assert [len(x.scores) for x in d] == [1, 1]  # no cross-image suppression


def test_to_coco_results_maps_back_and_remaps_ids():
    meta = LetterboxMeta(ratio=2.0, pad_x=0, pad_y=40, orig_w=100, orig_h=50)
    dets = ImageDets(np.array([[20, 60, 60, 100]], np.float32), np.array([0.5], np.float32), np.array([2]))
    (r,) = to_coco_results(dets, meta, 42, np.array([3, 7, 11]))
    assert r["image_id"] == 42 and r["category_id"] == 11 and r["score"] == 0.5
    assert r["bbox"] == [10.0, 10.0, 20.0, 20.0]
    json.dumps(r)  # plain Python types


# ----------------------------------------------------------------------------------------------
# sessions and metadata


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return _export(_Tiny(), tmp_path_factory.mktemp("tiny") / "tiny.onnx", 64, dynamic=True)


def test_provider_fallback_records_cpu(tiny_onnx):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA; the fallback path is not exercised")
    with pytest.warns(UserWarning, match="CUDAExecutionProvider") as rec:
        sess = make_session(tiny_onnx, ("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert len([w for w in rec if "does not offer" in str(w.message)]) == 1
    assert sess.get_providers()[0] == "CPUExecutionProvider"
    with pytest.warns(UserWarning):
        assert make_session(tiny_onnx, ["CUDAExecutionProvider"]).get_providers()[0] == "CPUExecutionProvider"


def test_provider_no_warning_when_available(tiny_onnx, recwarn):
    sess = make_session(tiny_onnx, ["CPUExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert not [w for w in recwarn if "does not offer" in str(w.message)]


def test_metadata_round_trip(tmp_path, tiny_onnx):
    import onnx

    path = tmp_path / "m.onnx"
    path.write_bytes(tiny_onnx.read_bytes())
    assert read_model_metadata(path) == {}
    m = onnx.load(str(path))
    m.metadata_props.add(key="author", value="someone")
    onnx.save(m, str(path))
    spec = YOLOX.with_size(64)
    write_model_metadata(path, "raw", spec, ["circle", "square", "triangle"])
    write_model_metadata(path, "raw", spec, ["circle", "square", "triangle"])  # idempotent, no duplicate key
    meta = read_model_metadata(path)
    assert meta == {"contract": "raw", "letterbox": spec, "class_names": ["circle", "square", "triangle"]}
    assert read_model_metadata(make_session(path, ["CPUExecutionProvider"])) == meta
    keys = [p.key for p in onnx.load(str(path)).metadata_props]
    assert sorted(keys) == ["author", "yolo_common"]
    with pytest.raises(ValueError):
        write_model_metadata(path, "nms", spec, [])


# ----------------------------------------------------------------------------------------------
# the whole pipeline


@pytest.mark.parametrize("contract", ["e2e", "raw"])
@pytest.mark.parametrize("image", [LANDSCAPE, PORTRAIT], ids=["landscape", "portrait"])
@pytest.mark.parametrize("spec, stamp", [(ULTRALYTICS.with_size(128), False), (YOLOX.with_size(96), True)],
                         ids=["ultralytics", "yolox-metadata"])
def test_cheating_model_scores_perfect_ap(tmp_path, contract, image, spec, stamp):
    """GT boxes pushed through letterbox_boxes come back as AP 1.0: letterbox, unletterbox and the
    class -> category map agree. With ``stamp`` the letterbox (top-left, 96 px) is only known from
    the model's metadata, so AP 1.0 also proves the metadata is honoured."""
    root = _write_coco(tmp_path / "data", [image])
    out = _cheat_e2e(image, spec) if contract == "e2e" else _cheat_raw(image, spec)
    path = _export(_Const(out), tmp_path / "cheat.onnx", spec.size)
    if stamp:
        write_model_metadata(path, contract, spec, [c["name"] for c in CATEGORIES])
    m = evaluate_onnx(path, root, "val", out_dir=tmp_path / "out", providers=["CPUExecutionProvider"],
                      warmup=1, progress=False)
    assert m["coco"]["AP"] == pytest.approx(1.0)
    assert m["contract"] == contract and m["letterbox"] == spec.to_dict()
    dets = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert len(dets) == len(image["cats"])  # raw: every 1-px duplicate suppressed
    assert sorted(d["category_id"] for d in dets) == sorted(image["cats"])
    assert {d["image_id"] for d in dets} == {101}


@pytest.fixture(scope="module")
def synthetic_one(tmp_path_factory) -> dict:
    from yolo_common.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("syn"), layouts=("coco", "yolo"), num_train=1, num_val=1,
                          image_size=(200, 120), max_objects=4, seed=3)


@pytest.mark.parametrize("layout", ["coco", "yolo"])
def test_cheating_model_on_synthetic_layouts(tmp_path, synthetic_one, layout):
    """Same proof through the yolo_common.data readers: COCO ids start at 1, YOLO ids at 0."""
    from yolo_common.data import load_split

    split = load_split(synthetic_one[layout], "val")
    (rec,) = split.records
    spec = ULTRALYTICS.with_size(160)
    meta, _, _ = letterbox_geometry(rec.width, rec.height, spec)
    out = np.zeros((1, 8, 6), np.float32)
    n = len(rec)
    out[0, :n, :4] = letterbox_boxes(rec.boxes, meta)
    out[0, :n, 4] = 0.8
    out[0, :n, 5] = [split.category_id_to_index[int(c)] for c in rec.category_ids]
    path = _export(_Const(out), tmp_path / "cheat.onnx", spec.size)
    m = evaluate_onnx(path, synthetic_one[layout], "val", providers=["CPUExecutionProvider"], warmup=0,
                      progress=False)
    assert n >= 1 and m["coco"]["AP"] == pytest.approx(1.0)
    assert m["dataset"]  # provenance present


def test_cheating_model_with_a_corrupt_image(tmp_path):
    spec = ULTRALYTICS.with_size(128)
    root = _write_coco(tmp_path / "data", [LANDSCAPE, {"w": 50, "h": 50, "corrupt": True}])
    path = _export(_Const(_cheat_e2e(LANDSCAPE, spec)), tmp_path / "cheat.onnx", spec.size)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        m = evaluate_onnx(path, root, providers=["CPUExecutionProvider"], warmup=0, progress=False)
    assert m["num_images"] == 1 and m["skipped_images"] == 1
    assert m["coco"]["AP"] == pytest.approx(1.0)


PROMISED = {"coco", "latency", "provider", "providers_requested", "model", "contract", "letterbox",
            "num_images", "dataset"}


@pytest.mark.parametrize("static_batch", [None, 2], ids=["dynamic", "static2"])
def test_random_model_metrics_json(tmp_path, tiny_onnx, static_batch):
    ims = [LANDSCAPE, PORTRAIT, {**LANDSCAPE, "w": 160}, PORTRAIT]
    root = _write_coco(tmp_path / "data", ims)
    model = tiny_onnx
    if static_batch:
        torch.manual_seed(0)
        model = _export(_Tiny(), tmp_path / "static.onnx", 64, batch=static_batch)
    threads = torch.get_num_threads()
    m = evaluate_onnx(model, root, "val", out_dir=tmp_path / "out", providers=["CPUExecutionProvider"],
                      batch=2, imgsz=64, max_images=3, warmup=1, progress=False)
    assert torch.get_num_threads() == threads  # NMS ran single-threaded, the caller's setting is back
    assert m["num_images"] == 3
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert PROMISED <= set(on_disk)
    assert on_disk["num_images"] == 3 and on_disk["provider"] == "CPUExecutionProvider"
    assert on_disk["model"] == str(Path(model).resolve()) and on_disk["contract"] == "raw"
    assert on_disk["letterbox"]["size"] == 64 and on_disk["latency"]["batch"] == 2
    for k in ("AP", "AP50", "AP75", "AR100"):
        assert 0.0 <= on_disk["coco"][k] <= 1.0
    lat = on_disk["latency"]
    for k in ("inference_ms", "preprocess_ms", "postprocess_ms"):
        assert set(lat[k]) == {"mean", "p50", "p90"}
        assert all(math.isfinite(v) and v > 0 for v in lat[k].values())
    assert lat["images_per_s"] > 0 and lat["warmup_runs"] == 1
    dets = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert dets and {d["image_id"] for d in dets} <= {101, 102, 103}
    assert {d["category_id"] for d in dets} <= {3, 7, 11}
    assert all(d["bbox"][2] >= 0 and d["bbox"][3] >= 0 for d in dets)
    assert on_disk["num_detections"] == len(dets) <= 3 * 300


def test_class_count_mismatch_is_an_error(tmp_path):
    root = _write_coco(tmp_path / "data", [LANDSCAPE])
    path = _export(_Tiny(nc=5), tmp_path / "nc5.onnx", 64)
    with pytest.raises(ValueError, match="5 classes"):
        evaluate_onnx(path, root, providers=["CPUExecutionProvider"], warmup=0, progress=False)


def test_cli_module(tmp_path):
    spec = ULTRALYTICS.with_size(128)
    root = _write_coco(tmp_path / "data", [LANDSCAPE, PORTRAIT])
    path = _export(_Const(_cheat_e2e(LANDSCAPE, spec)), tmp_path / "cheat.onnx", spec.size)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "yolo_common.onnx_eval", "--model", str(path), "--data", str(root),
                        "--split", "val", "--out", str(tmp_path / "out"), "--max-images", "1",
                        "--providers", "CPUExecutionProvider", "--contract", "e2e", "--warmup", "0"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "AP / AP50 / AP75" in r.stdout and "1.0000 / 1.0000" in r.stdout
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["num_images"] == 1 and m["coco"]["AP"] == pytest.approx(1.0)


def test_ort_threads_and_spinning_are_applied_and_recorded(tmp_path, tiny_onnx, monkeypatch):
    import onnxruntime as ort

    from yolo_common import onnx_eval

    seen = []
    real = onnx_eval.make_session

    def spy(path, providers, *, session_options=None):
        seen.append(session_options)
        return real(path, providers, session_options=session_options)

    monkeypatch.setattr(onnx_eval, "make_session", spy)
    root = _write_coco(tmp_path / "data", [LANDSCAPE])
    m = evaluate_onnx(tiny_onnx, root, "val", providers=["CPUExecutionProvider"], imgsz=64, warmup=0,
                      progress=False, intra_op_threads=1, spinning=False)
    opts = seen[-1]
    assert isinstance(opts, ort.SessionOptions) and opts.intra_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert m["settings"]["intra_op_threads"] == 1 and m["settings"]["spinning"] is False
    evaluate_onnx(tiny_onnx, root, "val", providers=["CPUExecutionProvider"], imgsz=64, warmup=0, progress=False)
    assert seen[-1] is None  # ORT's defaults untouched unless asked


def test_metadata_decode_settings_are_the_defaults(tmp_path):
    """A model stamped with its project's decode settings is scored with them unless the caller says
    otherwise; unknown settings are refused at export."""
    import shutil

    root = _write_coco(tmp_path / "data", [LANDSCAPE, PORTRAIT])
    torch.manual_seed(0)
    path = _export(_Tiny(), tmp_path / "m.onnx", 64)
    plain = tmp_path / "plain.onnx"
    shutil.copy(path, plain)
    write_model_metadata(path, "raw", ULTRALYTICS.with_size(64), ["circle", "square", "triangle"],
                         decode={"conf": 0.0001, "iou": 0.3, "max_det": 2, "multi_label": False})
    assert read_model_metadata(path)["decode"]["max_det"] == 2
    kw = dict(providers=["CPUExecutionProvider"], progress=False, warmup=0)
    m = evaluate_onnx(path, root, "val", **kw)
    assert (m["settings"]["conf"], m["settings"]["iou"], m["settings"]["max_det"], m["settings"]["multi_label"]) \
        == (0.0001, 0.3, 2, False)
    assert 0 < m["num_detections"] <= 2 * 2                     # the metadata's cap of 2 per image
    m2 = evaluate_onnx(path, root, "val", max_det=300, conf=0.0, **kw)   # the caller wins, the rest stays
    assert m2["settings"]["iou"] == 0.3 and m2["settings"]["max_det"] == 300
    assert m2["num_detections"] >= m["num_detections"]
    assert evaluate_onnx(path, root, "val", max_det=1, conf=0.0, **kw)["num_detections"] <= 2
    m3 = evaluate_onnx(plain, root, "val", **kw)                # no decode metadata: the old defaults
    assert (m3["settings"]["conf"], m3["settings"]["max_det"], m3["settings"]["multi_label"]) == (0.001, 300, True)
    with pytest.raises(ValueError, match="not among"):
        write_model_metadata(path, "raw", ULTRALYTICS.with_size(64), ["a"], decode={"nms": 0.5})


def test_set_decoder_equals_transformers_post_process():
    """The set contract scores as transformers' post_process_object_detection (softmax, no-object column
    dropped, best class per query, threshold, boxes scaled to the target size) on random outputs."""
    transformers = pytest.importorskip("transformers")
    from types import SimpleNamespace

    from yolo_common.onnx_eval import decode_set

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2, 50, 5)).astype(np.float32)          # 4 classes + no-object
    boxes = rng.uniform(0.05, 0.95, (2, 50, 4)).astype(np.float32)
    boxes[..., 2:] *= 0.3
    hw = (96, 128)
    ours = decode_set(logits, boxes, hw, conf=0.3, max_det=100)
    proc = transformers.YolosImageProcessor()
    ref = proc.post_process_object_detection(SimpleNamespace(logits=torch.from_numpy(logits),
                                                             pred_boxes=torch.from_numpy(boxes)),
                                             threshold=0.3, target_sizes=[hw, hw])
    for o, r in zip(ours, ref):
        order = torch.argsort(r["scores"], descending=True, stable=True)
        assert len(o.scores) == len(order) > 0
        np.testing.assert_allclose(o.scores, r["scores"][order].numpy(), rtol=1e-5)
        np.testing.assert_array_equal(o.classes, r["labels"][order].numpy())
        np.testing.assert_allclose(o.boxes, r["boxes"][order].numpy(), rtol=1e-5, atol=1e-3)
    capped = decode_set(logits, boxes, hw, conf=0.0, max_det=7)
    assert all(len(c.scores) == 7 and (np.diff(c.scores) <= 0).all() for c in capped)


@pytest.mark.parametrize("batch", [1, 2])
def test_overlapped_loop_gives_the_sequential_detections(tmp_path, tiny_onnx, batch):
    """Helper threads read the next batch and decode the previous one during session.run: the detections
    (order included) and stats are the sequential loop's; latency comes from a sequential pass."""
    ims = [LANDSCAPE, PORTRAIT, {**LANDSCAPE, "w": 160}, PORTRAIT, LANDSCAPE]
    root = _write_coco(tmp_path / "data", ims)
    kw = dict(providers=["CPUExecutionProvider"], batch=batch, imgsz=64, warmup=1, progress=False, conf=0.0)
    seq = evaluate_onnx(tiny_onnx, root, "val", out_dir=tmp_path / "seq", overlap=False, **kw)
    ovl = evaluate_onnx(tiny_onnx, root, "val", out_dir=tmp_path / "ovl", overlap=True, latency_images=2, **kw)
    assert (tmp_path / "seq" / "detections.json").read_text() == (tmp_path / "ovl" / "detections.json").read_text()
    assert seq["coco"] == ovl["coco"] and seq["num_detections"] == ovl["num_detections"] > 0
    assert ovl["latency"]["overlapped_loop"] and ovl["latency"]["measured_on_images"] == 2
    assert seq["latency"]["measured_on_images"] == 5 and not seq["latency"]["overlapped_loop"]


def test_export_detector_dynamic_batch_metadata_and_atomic(tmp_path):
    import onnxruntime as ort
    import torch

    from yolo_common.onnx_eval import export_detector, read_model_metadata

    class Raw(torch.nn.Module):   # [N, 3, 32, 32] -> [N, 4 + 2, 16]: boxes and two class scores per "anchor"
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 8, stride=8)

        def forward(self, x):
            return self.conv(x).flatten(2).sigmoid()

    spec = ULTRALYTICS.with_size(32)
    path = export_detector(Raw(), torch.zeros(1, 3, 32, 32), tmp_path / "m" / "raw.onnx", contract="raw",
                           letterbox_spec=spec, class_names=["a", "b"], decode={"conf": 0.1})
    assert sorted(p.name for p in path.parent.iterdir()) == ["raw.onnx"]        # no temp file left
    meta = read_model_metadata(path)
    assert meta["contract"] == "raw" and meta["class_names"] == ["a", "b"] and meta["decode"] == {"conf": 0.1}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"images": np.zeros((3, 3, 32, 32), np.float32)})[0].shape == (3, 6, 16)

    # a failure after the graph was written (stamping the metadata): no temp file, the old model untouched
    from yolo_common import onnx_eval

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.onnx").write_bytes(b"the previous model")

    def fail(*a, **k):
        assert (tmp_path / "b" / "x.onnx.tmp").is_file()   # the graph is there when this fails
        raise RuntimeError("boom")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_eval, "write_model_metadata", fail)
        with pytest.raises(RuntimeError, match="boom"):
            export_detector(Raw(), torch.zeros(1, 3, 32, 32), tmp_path / "b" / "x.onnx", contract="raw",
                            letterbox_spec=spec, class_names=["a", "b"])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["x.onnx"]
    assert (tmp_path / "b" / "x.onnx").read_bytes() == b"the previous model"
    with pytest.raises(ValueError, match="contract"):
        export_detector(Raw(), torch.zeros(1, 3, 32, 32), tmp_path / "c.onnx", contract="nms",
                        letterbox_spec=spec, class_names=[])


def test_set_model_without_metadata_warns_about_its_preprocessing(tmp_path):
    """A DETR-style export with no metadata is scored (contract guessed from its two outputs), with a warning:
    the default letterbox has no mean/std, which a set model was almost surely not trained on."""
    class TwoOut(torch.nn.Module):
        def forward(self, x):
            b = x.shape[0]
            m = x.mean()
            return torch.zeros(b, 5, len(CATEGORIES) + 1) + m, torch.full((b, 5, 4), 0.5) + 0 * m

    path = tmp_path / "set.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(TwoOut(), (torch.zeros(1, 3, 64, 64),), str(path), input_names=["images"],
                          output_names=["logits", "pred_boxes"], opset_version=17, dynamo=False)
    root = _write_coco(tmp_path / "data", [LANDSCAPE])
    with pytest.warns(UserWarning, match="set-prediction model without yolo_common metadata"):
        m = evaluate_onnx(path, root, "val", providers=["CPUExecutionProvider"], warmup=0, progress=False)
    assert m["contract"] == "set" and m["num_images"] == 1
