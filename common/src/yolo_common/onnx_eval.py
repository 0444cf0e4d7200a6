"""COCO evaluation of an exported ONNX detector with ONNX Runtime, plus latency.

The pipeline is deliberately plain: read image (PIL) -> :func:`yolo_common.preprocess.letterbox` ->
``session.run`` -> decode -> boxes back to original pixels -> COCO result dicts -> ``coco_map``.
Every project evaluates its exports through this one path, so numbers across projects differ only
by the model.

Output contracts (the model's *first* output is used):

- ``"e2e"``: ``[N, K, 6]`` rows ``x1, y1, x2, y2, score, class`` in letterboxed input pixels, NMS
  already done inside the model (YOLOv10-style NMS-free export). Rows with ``score > conf`` are kept.
- ``"raw"``: ``[N, 4 + nc, A]``, per anchor ``cx, cy, w, h`` in letterboxed pixels then ``nc`` class
  scores that are already probabilities (sigmoid applied in the graph). Every (anchor, class) pair
  with ``score > conf`` becomes a candidate (multi-label, as Ultralytics' validator does), the top
  ``max_candidates`` by score go through class-aware NMS (``torchvision.ops.batched_nms``) and the
  best ``max_det`` survive.

- ``"set"``: DETR-style set prediction, two outputs: ``logits [N, Q, C + 1]`` (the last column is
  "no object") and ``pred_boxes [N, Q, 4]`` normalised ``cx, cy, w, h`` of the model input. Scores are
  the softmax without the no-object column, one class per query (its best), as transformers'
  ``post_process_object_detection``; queries with ``score > conf``, best ``max_det`` first; no NMS.

The contract is taken from the ``contract`` argument, else from the model's ``yolo_common`` metadata
(see :func:`write_model_metadata`), else from the output shape (last dim 6 -> ``e2e``).

Model class index ``k`` maps to ``split.categories[k]["id"]`` (for COCO that is the 80 -> 91 map).

Latency: ``warmup`` runs on the first batch are excluded; inference time is ``session.run`` wall time
divided by the rows in the batch (padding rows included, since they cost the same), reported as
mean/p50/p90 ms per image. Reading+letterboxing and decoding are timed separately, and
``images_per_s`` is images over the wall time of the whole loop (read, letterbox, run, decode).
The ``raw`` contract's first use imports torchvision (it pulls in ``torch._dynamo``: ~5 s on a
2-core box, once per process); that lands in ``latency.load_s``, outside the timed loop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from yolo_common.preprocess import ULTRALYTICS, LetterboxMeta, LetterboxSpec, letterbox, read_image, unletterbox_boxes

META_KEY = "yolo_common"
CONTRACTS = ("e2e", "raw", "set")
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
DEFAULT_IMGSZ = 640


# ----------------------------------------------------------------------------------------------
# Sessions and metadata


def _provider_name(p: str | tuple) -> str:
    # ORT accepts either "Name" or ("Name", {options}).
    return p if isinstance(p, str) else p[0]


def session_options(intra_op_threads: int | None = None, spinning: bool | None = None):
    """``onnxruntime.SessionOptions`` with the two knobs that matter on small CPUs; ``None`` when both are
    left to ORT's defaults."""
    if intra_op_threads is None and spinning is None:
        return None
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if intra_op_threads is not None:
        if intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0 (0 = ORT default), got {intra_op_threads}")
        opts.intra_op_num_threads = int(intra_op_threads)
    if spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


def make_session(model_path: str | Path, providers: Sequence[str | tuple] = DEFAULT_PROVIDERS, *, session_options=None):
    """An ``onnxruntime.InferenceSession`` on the requested providers this install actually has.

    Unavailable providers are dropped with one warning (not ORT's per-provider noise); if none is
    left the session runs on CPU. ORT can still fall back silently (e.g. CUDA listed but its libraries
    fail to load), so callers should record ``session.get_providers()[0]``, not what they asked for.

    Args:
        model_path: the ``.onnx`` file.
        providers: provider names (or ``(name, options)`` tuples), in priority order.
        session_options: an optional ``onnxruntime.SessionOptions``.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    keep = [p for p in providers if _provider_name(p) in available]
    missing = [_provider_name(p) for p in providers if _provider_name(p) not in available]
    if missing:
        warnings.warn(f"onnxruntime {ort.__version__} does not offer {missing} (available: {available}); "
                      f"using {[_provider_name(p) for p in keep] or ['CPUExecutionProvider']}", stacklevel=2)
    if not keep:
        keep = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(model_path), sess_options=session_options, providers=keep)


def _check_metadata(meta: dict) -> dict:
    if meta.get("contract") is not None and meta["contract"] not in CONTRACTS:
        raise ValueError(f"metadata contract must be one of {CONTRACTS}, got {meta['contract']!r}")
    return meta


DECODE_DEFAULTS = {"conf": 0.001, "iou": 0.7, "max_det": 300, "multi_label": True}


def export_detector(module, example, path: str | Path, *, contract: str, letterbox_spec: LetterboxSpec,
                    class_names: Sequence[str], input_name: str = "images",
                    output_names: Sequence[str] = ("output0",), decode: dict | None = None,
                    opset: int = 17) -> Path:
    """Every project's ONNX export: ``module`` (already in this file's ``contract``) -> ``path`` with a dynamic
    batch on the input and every output, stamped by :func:`write_model_metadata`, written atomically.

    The TorchScript exporter (``dynamo=False``: the dynamo one needs onnxscript and ignores ``opset``) traces
    ``module`` (switched to eval mode, and left there) under ``no_grad`` on ``example`` (one input tensor; its batch size does not matter),
    with constant folding. Tracer warnings (shape arithmetic turned into constants) are silenced: the parity
    tests of each project are what says the graph is right. The file appears only when complete (written as
    ``<name>.onnx.tmp``, renamed), so a killed export never leaves half a model for the evaluator.
    """
    import warnings

    import torch

    if contract not in CONTRACTS:
        raise ValueError(f"contract must be one of {CONTRACTS}, got {contract!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")   # not *.onnx: a killed export is never picked up as a model
    axes = {name: {0: "batch"} for name in (input_name, *output_names)}
    module.eval()   # and it stays so: a wrapper built for the export says nothing about the model's old mode
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(tmp), opset_version=opset, dynamo=False,
                              do_constant_folding=True, input_names=[input_name], output_names=list(output_names),
                              dynamic_axes=axes)
        write_model_metadata(tmp, contract, letterbox_spec, list(class_names), decode=decode)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_model_metadata(onnx_path: str | Path, contract: str, letterbox_spec: LetterboxSpec,
                         class_names: Sequence[str], *, decode: dict | None = None) -> None:
    """Stamp ``metadata_props["yolo_common"]`` into an ONNX file, in place.

    The value is JSON ``{"contract", "letterbox": spec.to_dict(), "class_names"[, "decode"]}``; other
    metadata is kept. ``decode`` holds the project's own evaluation settings (any of ``conf``, ``iou``,
    ``max_det``, ``multi_label``), which :func:`evaluate_onnx` uses where its caller gives none, so the
    ONNX score is the project's score (e.g. YOLOX scores one class per anchor at conf 0.01, NMS 0.65).
    External-data tensors are not loaded (their references stay valid as the file stays put), so this is
    cheap even for large models.
    """
    import onnx

    if contract not in CONTRACTS:
        raise ValueError(f"contract must be one of {CONTRACTS}, got {contract!r}")
    doc = {"contract": contract, "letterbox": letterbox_spec.to_dict(), "class_names": [str(c) for c in class_names]}
    if decode:
        unknown = sorted(set(decode) - set(DECODE_DEFAULTS))
        if unknown:
            raise ValueError(f"decode settings {unknown} are not among {sorted(DECODE_DEFAULTS)}")
        doc["decode"] = dict(decode)
    value = json.dumps(doc)
    path = str(onnx_path)
    model = onnx.load(path, load_external_data=False)
    props = [(p.key, p.value) for p in model.metadata_props if p.key != META_KEY]
    del model.metadata_props[:]
    for k, v in props + [(META_KEY, value)]:
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, path)


def read_model_metadata(model: Any) -> dict:
    """The ``yolo_common`` metadata of a model path or an ``InferenceSession``; ``{}`` when absent.

    ``"letterbox"`` comes back as a :class:`LetterboxSpec`.
    """
    if hasattr(model, "get_modelmeta"):
        raw = model.get_modelmeta().custom_metadata_map.get(META_KEY)
    else:
        import onnx

        m = onnx.load(str(model), load_external_data=False)
        raw = next((p.value for p in m.metadata_props if p.key == META_KEY), None)
    if raw is None:
        return {}
    meta = json.loads(raw)
    if meta.get("letterbox") is not None:
        meta["letterbox"] = LetterboxSpec.from_dict(meta["letterbox"])
    return _check_metadata(meta)


# ----------------------------------------------------------------------------------------------
# Decoders (pure numpy; torchvision only for NMS)


class ImageDets(NamedTuple):
    """Detections of one image: ``boxes`` (n, 4) float32 xyxy, ``scores`` (n,) float32, ``classes`` (n,) int64."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def _empty() -> ImageDets:
    return ImageDets(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def detect_contract(shape: Sequence[int], *others: Sequence[int]) -> str:
    """The contract from the output shapes (first output, then any others), for a model without metadata:
    ``"set"`` for a second output ``[N, Q, 4]`` beside ``[N, Q, C + 1]`` (checked first: a 5-class DETR's
    logits end in 6 too), ``"e2e"`` if the last dim is 6 (``[N, K, 6]``), else ``"raw"`` (``[N, 4+nc, A]``)."""
    if len(shape) != 3:
        raise ValueError(f"expected a 3-d detector output, got shape {tuple(shape)}")
    if others and len(others[0]) == 3 and others[0][-1] == 4 and tuple(others[0][:2]) == tuple(shape[:2]):
        return "set"
    return "e2e" if shape[-1] == 6 else "raw"


def decode_e2e(output: np.ndarray, conf: float = 0.001, max_det: int = 300) -> list[ImageDets]:
    """Decode an ``[N, K, 6]`` NMS-free output into per-image detections sorted by score."""
    output = np.asarray(output)
    if output.ndim != 3 or output.shape[-1] != 6:
        raise ValueError(f"e2e output must be [N, K, 6], got {output.shape}")
    out = []
    for det in output:
        det = det[det[:, 4] > conf]
        det = det[np.argsort(-det[:, 4], kind="stable")[:max_det]]
        out.append(ImageDets(det[:, :4].astype(np.float32), det[:, 4].astype(np.float32),
                             np.rint(det[:, 5]).astype(np.int64)))
    return out


def _cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    half = b[:, 2:4] / 2
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    """Class-aware NMS via ``torchvision.ops.batched_nms``; indices of kept boxes, best first."""
    import torch
    from torchvision.ops import batched_nms

    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    keep = batched_nms(torch.from_numpy(np.ascontiguousarray(boxes, np.float32)),
                       torch.from_numpy(np.ascontiguousarray(scores, np.float32)),
                       torch.from_numpy(np.ascontiguousarray(classes, np.int64)), float(iou))
    return keep[:max_det].numpy()


def decode_raw(output: np.ndarray, conf: float = 0.001, iou: float = 0.7, max_det: int = 300, *,
               multi_label: bool = True, max_candidates: int = 30000) -> list[ImageDets]:
    """Decode a ``[N, 4+nc, A]`` output (cxcywh + sigmoid scores) with class-aware NMS.

    Args:
        output: the model output.
        conf: keep (anchor, class) scores strictly above this.
        iou: NMS IoU threshold (boxes of different classes never suppress each other).
        max_det: detections kept per image after NMS.
        multi_label: every class above ``conf`` of an anchor is a candidate (Ultralytics' validator);
            False keeps only each anchor's best class (faster, ~0.5 AP lower).
        max_candidates: cap on candidates entering NMS, highest scores first (bounds the cost of a
            badly calibrated model at ``conf=0.001``).
    """
    output = np.asarray(output)
    if output.ndim != 3 or output.shape[1] < 5:
        raise ValueError(f"raw output must be [N, 4+nc, A], got {output.shape}")
    out = []
    for pred in output:
        cls_scores = pred[4:]  # (nc, A)
        if multi_label:
            cls, anchor = np.nonzero(cls_scores > conf)
            scores = cls_scores[cls, anchor]
        else:
            best = cls_scores.argmax(0)
            s = cls_scores[best, np.arange(cls_scores.shape[1])]
            anchor = np.nonzero(s > conf)[0]
            cls, scores = best[anchor], s[anchor]
        if len(scores) > max_candidates:
            top = np.argpartition(-scores, max_candidates - 1)[:max_candidates]
            cls, anchor, scores = cls[top], anchor[top], scores[top]
        if len(scores) == 0:
            out.append(_empty())
            continue
        boxes = _cxcywh_to_xyxy(pred[:4, anchor].T.astype(np.float32))
        keep = nms(boxes, scores, cls, iou, max_det)
        out.append(ImageDets(boxes[keep], scores[keep].astype(np.float32), cls[keep].astype(np.int64)))
    return out


def decode_set(logits: np.ndarray, pred_boxes: np.ndarray, input_hw: tuple[int, int], conf: float = 0.0,
               max_det: int = 100) -> list[ImageDets]:
    """Decode DETR-style ``logits [N, Q, C+1]`` + ``pred_boxes [N, Q, 4]`` (normalised cxcywh) into
    per-image detections in input pixels (``input_hw`` = the model input's (h, w)), as transformers'
    ``post_process_object_detection`` scores them: softmax, no-object column dropped, best class per query."""
    logits = np.asarray(logits, np.float64)
    pred_boxes = np.asarray(pred_boxes, np.float64)
    if logits.ndim != 3 or pred_boxes.shape != (*logits.shape[:2], 4):
        raise ValueError(f"set outputs must be logits [N, Q, C+1] and pred_boxes [N, Q, 4], got {logits.shape} "
                         f"and {pred_boxes.shape}")
    z = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (z / z.sum(-1, keepdims=True))[..., :-1]
    h, w = input_hw
    out = []
    for p, b in zip(probs, pred_boxes):
        labels, scores = p.argmax(-1), p.max(-1)
        keep = np.nonzero(scores > conf)[0]
        keep = keep[np.argsort(-scores[keep], kind="stable")[:max_det]]
        xyxy = _cxcywh_to_xyxy(b[keep]) * np.array([w, h, w, h])
        out.append(ImageDets(xyxy.astype(np.float32), scores[keep].astype(np.float32), labels[keep].astype(np.int64)))
    return out


def decode(output: np.ndarray, contract: str, *, conf: float = 0.001, iou: float = 0.7,
           max_det: int = 300, multi_label: bool = True) -> list[ImageDets]:
    """Dispatch to :func:`decode_e2e` or :func:`decode_raw` (``set`` has two outputs: :func:`decode_set`)."""
    if contract == "e2e":
        return decode_e2e(output, conf, max_det)
    if contract == "raw":
        return decode_raw(output, conf, iou, max_det, multi_label=multi_label)
    raise ValueError(f"contract must be one of {CONTRACTS}, got {contract!r}")


def to_coco_results(dets: ImageDets, meta: LetterboxMeta, image_id: int, category_ids: np.ndarray) -> list[dict]:
    """Letterboxed detections of one image -> COCO result dicts (original pixels, bbox xywh).

    ``category_ids[k]`` is the dataset category id of model class ``k``; classes outside it must
    have been dropped by the caller.
    """
    if len(dets.boxes) == 0:
        return []
    b = unletterbox_boxes(dets.boxes, meta).astype(np.float64)
    b[:, 2:] -= b[:, :2]
    # Rounding keeps detections.json small; np.round (rint then an exact divide) gives the same
    # shortest reprs as Python's round at ~1/5 of the cost of a per-value round() call.
    boxes = np.round(b, 3).tolist()
    scores = np.round(dets.scores.astype(np.float64), 5).tolist()
    cats = category_ids[dets.classes].tolist()
    return [{"image_id": image_id, "category_id": c, "bbox": box, "score": s} for c, box, s in zip(cats, boxes, scores)]


# ----------------------------------------------------------------------------------------------
# The pipeline


class _ModelInput(NamedTuple):
    name: str
    batch: int | None  # None = dynamic
    size: int | tuple[int, int] | None  # None = dynamic; (h, w) for a static non-square input
    dtype: Any


def _model_input(sess) -> _ModelInput:
    inp = sess.get_inputs()[0]
    shape = list(inp.shape) + [None] * (4 - len(inp.shape))
    static = [d if isinstance(d, int) and d > 0 else None for d in shape[:4]]
    h, w = static[2], static[3]
    if (h is None) != (w is None):
        raise ValueError(f"model input {inp.shape} has one static and one dynamic spatial dim")
    size = None if h is None else (h if h == w else (h, w))
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    return _ModelInput(inp.name, static[0], size, dtype)


def _resolve_size(model_size, imgsz: int | None, spec: LetterboxSpec | None):
    # Static model shape wins (anything else cannot run); then the flag; then metadata; then 640.
    if model_size is not None:
        if imgsz is not None and imgsz != model_size:
            warnings.warn(f"imgsz={imgsz} ignored: the model's input is static {model_size}", stacklevel=3)
        return model_size
    if imgsz is not None:
        return int(imgsz)
    return spec.size if spec is not None else DEFAULT_IMGSZ


def _resolve_batch(model_batch: int | None, batch: int) -> int:
    if model_batch is None:
        return max(1, int(batch))
    if batch != model_batch and batch != 1:
        warnings.warn(f"batch={batch} ignored: the model's batch dim is static {model_batch}", stacklevel=3)
    return model_batch


def _stats(xs: list[float]) -> dict:
    if not xs:
        return {"mean": math.nan, "p50": math.nan, "p90": math.nan}
    a = np.asarray(xs) * 1000.0
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90))}


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    # In a log file (no terminal) a bar redraw per image would flood it: one line every 30 s instead.
    tty = sys.stderr.isatty()
    return tqdm(total=total, unit="img", desc="onnx eval", disable=not enabled, mininterval=0.1 if tty else 30)


@contextlib.contextmanager
def _torch_single_thread():
    """Run torch (NMS) on one thread for the duration, restoring the caller's setting after.

    NMS is sequential anyway, but the small tensor ops around it wake torch's OpenMP pool, whose
    workers then spin-wait and steal the cores ONNX Runtime's next ``session.run`` needs: measured
    +35% inference latency on a 2-core box. Only touched if torch is already imported.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _json_safe(x: Any) -> Any:
    # Strict JSON has no NaN (per-class AP of a category without GT is NaN): write null instead.
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _load_batch(records, spec: LetterboxSpec, skipped: dict):
    """Read + letterbox a batch; undecodable images are skipped and counted (reported once later)."""
    chws, metas, recs = [], [], []
    for r in records:
        try:
            img = read_image(r.path)
        except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for broken files
            skipped["unreadable"] = skipped.get("unreadable", 0) + 1
            skipped.setdefault("example", f"{r.path}: {e}")
            continue
        if (img.shape[1], img.shape[0]) != (r.width, r.height):
            skipped["size_mismatch"] = skipped.get("size_mismatch", 0) + 1
        chw, m = letterbox(img, spec)
        chws.append(chw)
        metas.append(m)
        recs.append(r)
    return chws, metas, recs


def _stack(chws: list[np.ndarray], rows: int, dtype) -> np.ndarray:
    x = np.zeros((rows, *chws[0].shape), dtype=dtype)  # zero rows pad a static batch; their output is ignored
    for i, c in enumerate(chws):
        x[i] = c
    return x


@dataclass
class _LoopResult:
    contract: str | None
    detections: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    dropped: int = 0  # detections whose class index has no category (e2e only; raw checks nc up front)
    t_pre: list = field(default_factory=list)
    t_infer: list = field(default_factory=list)
    t_post: list = field(default_factory=list)
    warmup_s: float = 0.0
    loop_s: float = 0.0
    n_done: int = 0


def _decode_batch(outs, n: int, contract: str, hw, *, conf, iou, max_det, multi_label, metas, recs,
                  category_ids: np.ndarray) -> tuple[list[dict], int, float]:
    """Decode one batch's outputs and map them to COCO results: ``(results, dropped, seconds)``."""
    t = time.perf_counter()
    nc = len(category_ids)
    if contract == "set":
        batch_dets = decode_set(outs[0][:n], outs[1][:n], hw, conf, max_det)
    else:
        batch_dets = decode(outs[0][:n], contract, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)
    results, dropped = [], 0
    for dets, m, r in zip(batch_dets, metas, recs):
        ok = (dets.classes >= 0) & (dets.classes < nc)
        if not ok.all():
            dropped += int((~ok).sum())
            dets = ImageDets(dets.boxes[ok], dets.scores[ok], dets.classes[ok])
        results += to_coco_results(dets, m, r.image_id, category_ids)
    return results, dropped, time.perf_counter() - t


def _check_outputs(outs, contract: str, nc: int) -> None:
    out = outs[0]
    if contract == "raw" and out.shape[1] - 4 != nc:
        raise ValueError(f"raw output {out.shape} has {out.shape[1] - 4} classes but the dataset has {nc} categories")
    if contract == "set" and (len(outs) < 2 or out.shape[-1] - 1 != nc):
        raise ValueError(f"set contract: expected logits [N, Q, {nc}+1] and pred_boxes outputs, got "
                         f"{[o.shape for o in outs]}")


def _inference_loop(sess, inp: _ModelInput, records, spec: LetterboxSpec, rows: int, *, contract: str | None,
                    category_ids: np.ndarray, conf: float, iou: float, max_det: int, warmup: int,
                    progress: bool, multi_label: bool = True, overlap: bool = False) -> _LoopResult:
    """Read, letterbox, run, decode, map back: the timed part of :func:`evaluate_onnx`.

    ``overlap``: one helper thread reads and letterboxes batch i+1 and another decodes batch i-1 while
    the main thread is in ``session.run`` for batch i (PIL, numpy, ORT and torchvision's NMS release the
    GIL). Detections are the same, in the same order; the per-stage times then include contention, so the
    caller takes its latency figures from a sequential pass (:func:`evaluate_onnx`'s ``latency_images``).
    """
    from concurrent.futures import ThreadPoolExecutor

    res = _LoopResult(contract)
    nc = len(category_ids)
    bar = _progress(len(records), progress)
    batches = [records[i:i + rows] for i in range(0, len(records), rows)]
    pool = ThreadPoolExecutor(2, thread_name_prefix="onnx_eval") if overlap and len(batches) > 1 else None

    def load(batch):
        t0 = time.perf_counter()
        loaded = _load_batch(batch, spec, res.skipped)   # only this thread writes res.skipped while it runs
        return loaded, time.perf_counter() - t0

    def collect(done, n):
        dets, dropped, t_post = done.result() if hasattr(done, "result") else done
        res.detections += dets
        res.dropped += dropped
        res.t_post.append(t_post / n)

    t_loop = time.perf_counter()
    pending = None
    try:
        next_load = pool.submit(load, batches[0]) if pool else None
        for bi, batch in enumerate(batches):
            (chws, metas, recs), t_pre = next_load.result() if pool else load(batch)
            if pool and bi + 1 < len(batches):
                next_load = pool.submit(load, batches[bi + 1])
            if chws:
                x = _stack(chws, rows if inp.batch is not None else len(chws), inp.dtype)
                t1 = time.perf_counter()
                if warmup and res.n_done == 0:
                    for _ in range(warmup):
                        sess.run(None, {inp.name: x})
                    res.warmup_s = time.perf_counter() - t1
                    t1 = time.perf_counter()
                outs = sess.run(None, {inp.name: x})
                t2 = time.perf_counter()
                res.contract = res.contract or detect_contract(*(o.shape for o in outs))
                _check_outputs(outs, res.contract, nc)
                args = (outs, len(chws), res.contract, x.shape[2:])
                kw = dict(conf=conf, iou=iou, max_det=max_det, multi_label=multi_label, metas=metas, recs=recs,
                          category_ids=category_ids)
                if pending is not None:                  # keep the detections in batch order
                    collect(*pending)
                    pending = None
                if pool:
                    pending = (pool.submit(_decode_batch, *args, **kw), len(chws))
                else:
                    collect(_decode_batch(*args, **kw), len(chws))
                res.t_pre.append(t_pre / len(chws))
                res.t_infer.append((t2 - t1) / x.shape[0])
                res.n_done += len(chws)
            bar.update(len(batch))
        if pending is not None:
            collect(*pending)
    finally:
        if pool:
            pool.shutdown(wait=True)
        bar.close()
    res.loop_s = time.perf_counter() - t_loop - res.warmup_s
    return res


def evaluate_onnx(
    model: str | Path,
    data: str | Path,
    split: str = "val",
    *,
    out_dir: str | Path | None = None,
    providers: Sequence[str | tuple] = DEFAULT_PROVIDERS,
    batch: int = 1,
    imgsz: int | None = None,
    max_images: int | None = None,
    conf: float | None = None,
    iou: float | None = None,
    max_det: int | None = None,
    multi_label: bool | None = None,
    contract: str | None = None,
    warmup: int = 3,
    progress: bool = True,
    letterbox_spec: LetterboxSpec | None = None,
    intra_op_threads: int | None = None,
    spinning: bool | None = None,
    overlap: bool = True,
    latency_images: int = 16,
) -> dict:
    """Evaluate an ONNX detector on a dataset split: COCO mAP plus latency.

    Args:
        model: ``.onnx`` path.
        data: COCO root, YOLO ``data.yaml`` or VOC root (anything ``load_split`` reads).
        split: split name.
        out_dir: where ``metrics.json`` and ``detections.json`` go (nothing written if None).
        providers: ONNX Runtime providers in priority order (unavailable ones are dropped).
        batch: images per ``session.run`` when the model's batch dim is dynamic (a static batch dim
            wins; the last batch is zero-padded for a static batch > 1).
        imgsz: input size when the model's spatial dims are dynamic (else metadata, else 640).
        max_images: evaluate only the first N images (GT is restricted to them too).
        conf, iou, max_det, multi_label: decode settings (``iou`` and ``multi_label`` are unused by
            ``e2e``); ``None`` takes the model metadata's ``decode`` (the exporting project's own
            evaluation settings), else 0.001 / 0.7 / 300 / multi-label.
        contract: ``"e2e"`` or ``"raw"``; default from metadata, else from the output shape.
        warmup: untimed runs on the first batch.
        progress: tqdm bar (a line every 30 s when stderr is not a terminal).
        letterbox_spec: override the letterbox (default: model metadata, else ``ULTRALYTICS``).
        intra_op_threads: ORT's ``intra_op_num_threads`` (default: ORT's own, one per core).
        spinning: ORT's ``session.intra_op.allow_spinning``; ``False`` stops idle worker threads from
            busy-waiting. On a small shared box these two change the bare loop by up to 1.9x, so they
            are recorded in ``settings``. Default: ORT's (spinning on).
        overlap: read + letterbox the next batch and decode the previous one on helper threads while
            ``session.run`` works (same detections, in the same order; ``loop_s`` and ``images_per_s``
            are those of the overlapped loop). False: the strictly sequential loop.
        latency_images: with ``overlap``, the latency figures (``inference_ms``, ``preprocess_ms``,
            ``postprocess_ms``) come from a sequential pass over this many first images, since overlap
            inflates per-stage times; ``latency.measured_on_images`` says how many.

    Note:
        While the loop runs torch is held to one thread (restored after) so NMS does not compete
        with ONNX Runtime for cores.

    Returns:
        The metrics dict that is also written to ``metrics.json``: ``coco`` (``coco_map`` stats),
        ``latency``, ``provider`` (actually used), ``providers_requested``, ``model``, ``contract``,
        ``letterbox``, ``num_images``, ``skipped_images``, ``dataset`` (provenance), ``settings``.
    """
    import onnxruntime as ort

    from yolo_common.data import load_split, provenance, to_coco_dict
    from yolo_common.evaluation import coco_map

    t_start = time.perf_counter()
    if contract is not None and contract not in CONTRACTS:
        raise ValueError(f"contract must be one of {CONTRACTS}, got {contract!r}")
    model_path = Path(model).resolve()
    sess = make_session(model_path, providers, session_options=session_options(intra_op_threads, spinning))
    meta = read_model_metadata(sess)
    contract = contract or meta.get("contract")
    given = {"conf": conf, "iou": iou, "max_det": max_det, "multi_label": multi_label}
    saved = meta.get("decode", {})
    dec = {k: given[k] if given[k] is not None else saved.get(k, v) for k, v in DECODE_DEFAULTS.items()}
    conf, iou, max_det = float(dec["conf"]), float(dec["iou"]), int(dec["max_det"])
    multi_label = bool(dec["multi_label"])
    inp = _model_input(sess)
    base_spec = letterbox_spec or meta.get("letterbox")
    if base_spec is None and (contract == "set" or (contract is None and len(sess.get_outputs()) == 2)):
        # a DETR-style export without metadata: Ultralytics' letterbox (no mean/std) is almost surely not
        # what it was trained on, and the AP would just come out low without saying why
        warnings.warn(f"{model_path}: a set-prediction model without yolo_common metadata; scoring it with "
                      f"Ultralytics' letterbox. Pass letterbox_spec= (or export with write_model_metadata) for its "
                      f"own resize and normalisation", stacklevel=2)
    spec = (base_spec or ULTRALYTICS).with_size(_resolve_size(inp.size, imgsz, base_spec))
    rows = _resolve_batch(inp.batch, batch)

    ds = load_split(data, split)
    if max_images is not None:
        ds = replace(ds, records=ds.records[:max_images])
    if not ds.records:
        raise ValueError(f"no images to evaluate in {data} split {split!r}")
    category_ids = np.array([c["id"] for c in ds.categories], dtype=np.int64)
    nc = len(category_ids)
    if meta.get("class_names") is not None and len(meta["class_names"]) != nc:
        raise ValueError(f"model has {len(meta['class_names'])} classes but the dataset has {nc} categories")
    if contract not in ("e2e", "set"):
        import torch  # noqa: F401  (pay the import here, counted in load_s, not inside the first timed decode)
        import torchvision  # noqa: F401
    t_loaded = time.perf_counter()

    loop_kw = dict(category_ids=category_ids, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)
    with _torch_single_thread():
        res = _inference_loop(sess, inp, ds.records, spec, rows, contract=contract, warmup=warmup,
                              progress=progress, overlap=overlap, **loop_kw)
        timed = res
        if overlap and latency_images and res.n_done:
            # The overlapped loop's per-stage times include the helper threads' contention: the latency
            # figures come from a short sequential pass over the first images instead (model warm already).
            timed = _inference_loop(sess, inp, ds.records[:latency_images], spec, rows, contract=res.contract,
                                    warmup=0, progress=False, overlap=False, **loop_kw)
    contract, detections, skipped, dropped = res.contract, res.detections, res.skipped, res.dropped

    if skipped.get("unreadable"):
        warnings.warn(f"skipped {skipped['unreadable']} unreadable image(s) (kept in GT as misses), "
                      f"e.g. {skipped['example']}", stacklevel=2)
    if skipped.get("size_mismatch"):
        warnings.warn(f"{skipped['size_mismatch']} image(s) decode to a size other than the annotation's; "
                      "their boxes may be misaligned", stacklevel=2)
    if dropped:
        warnings.warn(f"dropped {dropped} detection(s) with a class index outside 0..{nc - 1}", stacklevel=2)

    t_score = time.perf_counter()
    # Unreadable images stay in the GT: dropping them would quietly inflate the score.
    stats = coco_map(to_coco_dict(ds), detections)
    scoring_s = time.perf_counter() - t_score

    metrics = {
        "coco": stats,
        "latency": {
            "inference_ms": _stats(timed.t_infer),
            "preprocess_ms": _stats(timed.t_pre),
            "postprocess_ms": _stats(timed.t_post),
            "measured_on_images": timed.n_done,
            "overlapped_loop": bool(overlap),
            "images_per_s": res.n_done / res.loop_s if res.loop_s > 0 else math.nan,
            "batch": rows,
            "warmup_runs": warmup,
            "warmup_s": res.warmup_s,
            "load_s": t_loaded - t_start,
            "loop_s": res.loop_s,
            "scoring_s": scoring_s,
            "total_s": time.perf_counter() - t_start,
        },
        "provider": sess.get_providers()[0],
        "providers_requested": [_provider_name(p) for p in providers],
        "session_providers": sess.get_providers(),
        "onnxruntime": ort.__version__,
        "model": str(model_path),
        "contract": contract,
        "letterbox": spec.to_dict(),
        "num_images": res.n_done,
        "skipped_images": int(skipped.get("unreadable", 0)),
        "num_detections": len(detections),
        "dataset": provenance(ds),
        "settings": {"split": split, "imgsz": spec.size, "batch": rows, "max_images": max_images,
                     "conf": conf, "iou": iou, "max_det": max_det, "multi_label": multi_label,
                     "intra_op_threads": intra_op_threads,
                     "spinning": spinning},
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2))
        (out / "detections.json").write_text(json.dumps(detections))
    return metrics


# ----------------------------------------------------------------------------------------------
# CLI


def summary_table(metrics: dict) -> str:
    """A short human summary of :func:`evaluate_onnx`'s result."""
    c, lat = metrics["coco"], metrics["latency"]
    inf = lat["inference_ms"]
    rows = [
        ("model", Path(metrics["model"]).name),
        ("images", f"{metrics['num_images']} (skipped {metrics['skipped_images']})"),
        ("provider", metrics["provider"]),
        ("contract / imgsz", f"{metrics['contract']} / {metrics['letterbox']['size']}"),
        ("AP / AP50 / AP75", f"{c['AP']:.4f} / {c['AP50']:.4f} / {c['AP75']:.4f}"),
        ("AR100", f"{c['AR100']:.4f}"),
        ("infer ms/img mean p50 p90", f"{inf['mean']:.2f} {inf['p50']:.2f} {inf['p90']:.2f}"),
        ("pre / post ms/img", f"{lat['preprocess_ms']['mean']:.2f} / {lat['postprocess_ms']['mean']:.2f}"),
        ("images/s (loop)", f"{lat['images_per_s']:.1f}"),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yolo-onnx-eval", description="COCO mAP + latency of an ONNX detector.")
    p.add_argument("--model", required=True, help=".onnx file")
    p.add_argument("--data", required=True, help="COCO root, YOLO data.yaml or VOC root")
    p.add_argument("--split", default="val")
    p.add_argument("--out", default=None, help="directory for metrics.json and detections.json")
    p.add_argument("--providers", nargs="+", default=list(DEFAULT_PROVIDERS))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--conf", type=float, default=None, help="default: the model's metadata, else 0.001")
    p.add_argument("--iou", type=float, default=None, help="default: the model's metadata, else 0.7")
    p.add_argument("--max-det", type=int, default=None, help="default: the model's metadata, else 300")
    p.add_argument("--contract", choices=CONTRACTS, default=None)
    label = p.add_mutually_exclusive_group()
    label.add_argument("--multi-label", dest="multi_label", action="store_const", const=True, default=None,
                       help="raw: every class above conf per anchor (default: the metadata's, else on)")
    label.add_argument("--single-label", dest="multi_label", action="store_const", const=False,
                       help="raw: only the best class per anchor")
    p.add_argument("--no-overlap", action="store_true",
                   help="the strictly sequential loop (no read/decode threads beside session.run)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--intra-op-threads", type=int, default=None, help="ORT intra_op_num_threads (default: ORT's)")
    p.add_argument("--no-spinning", action="store_true", help="ORT: idle threads do not busy-wait")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``yolo-onnx-eval`` / ``python -m yolo_common.onnx_eval``)."""
    a = build_parser().parse_args(argv)
    metrics = evaluate_onnx(a.model, a.data, a.split, out_dir=a.out, providers=a.providers, batch=a.batch,
                            imgsz=a.imgsz, max_images=a.max_images, conf=a.conf, iou=a.iou, max_det=a.max_det,
                            multi_label=a.multi_label, contract=a.contract, warmup=a.warmup,
                            progress=not a.no_progress, intra_op_threads=a.intra_op_threads,
                            spinning=False if a.no_spinning else None, overlap=not a.no_overlap)
    print(summary_table(metrics))
    if a.out:
        print(f"wrote {Path(a.out) / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
