"""How much does ``yolo_common.onnx_eval.evaluate_onnx`` cost on top of the model itself?

Builds a small random-init conv detector (raw contract, ``[1, 4+nc, A]``, ~1 GMAC at 320 px so that
inference dominates), exports it, writes a synthetic COCO val set, then times

1. ``evaluate_onnx`` end to end (session, dataset load, read + letterbox + run + NMS, COCO scoring),
2. a bare loop over the same images: read + the same letterbox + ``session.run``, nothing else,

and reports the pipeline overhead ``(pipeline - bare) / bare`` in percent, end to end and for the
per-image loop alone. The random head is rescaled so that its scores spread like a trained model's
(a few hundred NMS candidates per image at conf=0.001; ``--cls-bias -4`` makes every pair one).

    python tasks/bench_common_onnx.py [--num-images 200] [--imgsz 320] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path


def build_bench_detector(nc: int, seed: int, cls_bias: float = -9.0, imgsz: int = 320):
    import torch
    from torch import nn

    torch.manual_seed(seed)

    def conv(cin, cout, s):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class BenchDetector(nn.Module):
        """Stride-8 single-scale detector: cxcywh in input pixels + sigmoid class scores per cell."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(conv(3, 32, 2), conv(32, 64, 2), conv(64, 64, 1), conv(64, 128, 2),
                                      conv(128, 128, 1), conv(128, 128, 1))
            self.head = nn.Conv2d(128, 4 + nc, 1)
            self._calibrate(cls_bias)

        @torch.no_grad()
        def _calibrate(self, bias: float, target_std: float = 1.0):
            # Random init gives near-constant outputs (every anchor the same score and box), which is
            # neither realistic nor a fair NMS load. Rescale the head so its outputs spread with std
            # ~1 and put class logits at `bias`: bias=-9 leaves ~13% of (anchor, class) pairs above
            # conf=0.001 on the synthetic images (~600 NMS candidates per image), the order of what a
            # trained detector gives; -4 makes every pair a candidate.
            self.eval()
            p = self.head(self.body(torch.rand(2, 3, imgsz, imgsz)))
            self.head.weight.mul_(target_std / p.std(dim=(0, 2, 3)).clamp_min(1e-8).view(-1, 1, 1, 1))
            self.head.bias.zero_()
            self.head.bias[4:] = bias

        def forward(self, x):
            p = self.head(self.body(x))  # (N, 4+nc, H/8, W/8)
            n, _, h, w = p.shape
            gy, gx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
            grid = torch.stack([gx, gy]).reshape(1, 2, h * w)
            p = p.flatten(2)
            xy = (grid + p[:, :2].sigmoid() * 2 - 0.5) * 8
            wh = p[:, 2:4].sigmoid() * 4 * 8
            return torch.cat([xy, wh, p[:, 4:].sigmoid()], 1)

    return BenchDetector().eval()


def export_onnx(model, path: Path, imgsz: int) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, 3, imgsz, imgsz),), str(path), input_names=["images"],
                          output_names=["output0"], opset_version=17, dynamo=False)
    return path


def _bare_loop(model_path: Path, records, spec, warmup: int = 3) -> tuple[float, float]:
    """``(total_s, run_s)`` of read + letterbox + session.run over ``records`` (session and warm-up untimed)."""
    from yolo_common.onnx_eval import make_session
    from yolo_common.preprocess import letterbox, read_image

    sess = make_session(model_path, ["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x, _ = letterbox(read_image(records[0].path), spec)
    for _ in range(warmup):
        sess.run(None, {name: x[None]})
    run_s, t = 0.0, time.perf_counter()
    for r in records:
        x, _ = letterbox(read_image(r.path), spec)
        t1 = time.perf_counter()
        sess.run(None, {name: x[None]})
        run_s += time.perf_counter() - t1
    return time.perf_counter() - t, run_s


def run(num_images: int = 200, imgsz: int = 320, seed: int = 0, cls_bias: float = -9.0,
        batches: tuple[int, ...] = (1, 8)) -> dict:
    """Build, export, generate, time both loops; returns the numbers (also printed).

    ``cls_bias`` sets how many NMS candidates the random model makes: -9 (default) ~13% of
    (anchor, class) pairs above conf=0.001 on the synthetic images (~600 per image), -4 every pair (worst case).
    """
    from yolo_common.data import load_split
    from yolo_common.onnx_eval import evaluate_onnx, write_model_metadata
    from yolo_common.preprocess import ULTRALYTICS
    from yolo_common.synthetic import make_synthetic

    class_names = ("circle", "square", "triangle")
    spec = ULTRALYTICS.with_size(imgsz)
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as tmp:
        tmp = Path(tmp)
        print(f"[bench] exporting random-init detector at {imgsz}px", flush=True)
        model_path = export_onnx(build_bench_detector(len(class_names), seed, cls_bias, imgsz), tmp / "bench.onnx", imgsz)
        write_model_metadata(model_path, "raw", spec, class_names)
        print(f"[bench] writing {num_images} synthetic val images (480x360)", flush=True)
        coco = make_synthetic(tmp / "data", layouts=("coco",), num_train=0, num_val=num_images,
                              image_size=(480, 360), class_names=class_names, seed=seed)["coco"]

        # torchvision (for NMS) pulls in torch._dynamo: seconds, once per process. Timed on its own so
        # the overhead below is what every evaluation pays, with the one-off cost reported beside it.
        t = time.perf_counter()
        import torchvision  # noqa: F401
        import_s = time.perf_counter() - t
        print(f"[bench] import torchvision: {import_s:.2f} s (one-off)", flush=True)

        print("[bench] bare loop: read + letterbox + session.run", flush=True)
        records = load_split(coco, "val").records
        bare_s, bare_run_s = _bare_loop(model_path, records, spec)

        # The per-image loop, sequential and overlapped (helper threads read the next batch and decode the
        # previous one during session.run), at each batch size, with ORT's default threads and with one.
        loops = []
        for batch in batches:
            for threads in (None, 1):
                row = {"batch": batch, "intra_op_threads": threads}
                for overlap in (False, True):
                    r = evaluate_onnx(model_path, coco, "val", providers=["CPUExecutionProvider"], progress=False,
                                      batch=batch, overlap=overlap, intra_op_threads=threads)
                    key = "overlap" if overlap else "sequential"
                    row[f"{key}_loop_s"] = r["latency"]["loop_s"]
                    row[f"{key}_loop_overhead_pct"] = 100 * (r["latency"]["loop_s"] - bare_s) / bare_s
                    row[f"{key}_detections"] = r["num_detections"]
                    row[f"{key}_AP"] = r["coco"]["AP"]
                loops.append(row)
                print(f"[bench] batch {batch}, ORT threads {threads or 'default'}: loop sequential "
                      f"{row['sequential_loop_s']:.2f} s ({row['sequential_loop_overhead_pct']:+.1f}%), overlapped "
                      f"{row['overlap_loop_s']:.2f} s ({row['overlap_loop_overhead_pct']:+.1f}%) vs bare {bare_s:.2f} s; "
                      f"same detections: {row['sequential_detections'] == row['overlap_detections']}", flush=True)

        print("[bench] evaluate_onnx end to end (defaults: batch 1, overlapped)", flush=True)
        t = time.perf_counter()
        m = evaluate_onnx(model_path, coco, "val", providers=["CPUExecutionProvider"], progress=False)
        pipeline_s = time.perf_counter() - t

    lat = m["latency"]
    res = {
        "num_images": m["num_images"],
        "imgsz": imgsz,
        "provider": m["provider"],
        "pipeline_s": pipeline_s,
        "bare_s": bare_s,
        "overhead_pct": 100 * (pipeline_s - bare_s) / bare_s,
        "torchvision_import_s": import_s,
        "overhead_pct_cold": 100 * (pipeline_s + import_s - bare_s) / bare_s,
        "loop_s": lat["loop_s"],
        "loop_overhead_pct": 100 * (lat["loop_s"] - bare_s) / bare_s,
        "load_s": lat["load_s"],
        "warmup_s": lat["warmup_s"],
        "scoring_s": lat["scoring_s"],
        "inference_ms_mean": lat["inference_ms"]["mean"],
        "bare_inference_ms_mean": 1000 * bare_run_s / len(records),
        "bare_preprocess_ms_mean": 1000 * (bare_s - bare_run_s) / len(records),
        "preprocess_ms_mean": lat["preprocess_ms"]["mean"],
        "postprocess_ms_mean": lat["postprocess_ms"]["mean"],
        "detections_per_image": m["num_detections"] / max(1, m["num_images"]),
        "cls_bias": cls_bias,
        "AP": m["coco"]["AP"],
        "loops": loops,
        "scoring_share_pct": 100 * lat["scoring_s"] / pipeline_s,
    }
    print(f"[bench] pipeline {pipeline_s:.2f} s  bare {bare_s:.2f} s  overhead {res['overhead_pct']:.1f}% "
          f"(loop only {res['loop_overhead_pct']:.1f}%: load {res['load_s']:.2f} s, warm-up {res['warmup_s']:.2f} s, "
          f"scoring {res['scoring_s']:.2f} s outside the loop; {res['overhead_pct_cold']:.1f}% counting the "
          f"torchvision import)", flush=True)
    print(f"[bench] per image, pipeline: infer {res['inference_ms_mean']:.2f} ms, pre {res['preprocess_ms_mean']:.2f} ms, "
          f"post {res['postprocess_ms_mean']:.2f} ms; bare: infer {res['bare_inference_ms_mean']:.2f} ms, "
          f"pre {res['bare_preprocess_ms_mean']:.2f} ms", flush=True)
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=200)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cls-bias", type=float, default=-9.0, help="class logit bias; -4 = every pair is an NMS candidate")
    a = ap.parse_args(argv)
    res = run(a.num_images, a.imgsz, a.seed, a.cls_bias)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
