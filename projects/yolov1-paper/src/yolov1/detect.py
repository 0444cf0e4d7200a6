"""``python -m yolov1.detect``: run a detection checkpoint on images; annotated copies + a JSON of detections.

    python -m yolov1.detect photo.jpg --checkpoint runs/detect_voc --out runs/detect_out
    python -m yolov1.detect "images/*.jpg" --checkpoint runs/detect_voc/checkpoints/epoch_0134 --conf 0.2

Each image is resized to the network input (no letterbox, as in training), decoded with per-class NMS and
mapped back to its own pixels. ``<out>/<name>.jpg`` shows the boxes, ``<out>/detections.json`` lists
``{"file", "width", "height", "detections": [{"class", "score", "bbox": [x1, y1, x2, y2]}]}`` per image. An
image that does not decode is reported by name and skipped (counted at the end).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="an image, a folder of images or a glob")
    ap.add_argument("--checkpoint", required=True, help="checkpoint folder or detection run folder")
    ap.add_argument("--out", default="runs/detect_out")
    ap.add_argument("--conf", type=float, default=0.2, help="minimum class-specific score to keep")
    ap.add_argument("--nms-iou", type=float, default=0.5)
    ap.add_argument("--max-detections", type=int, default=100)
    a = ap.parse_args(argv)

    import torch
    from PIL import Image
    from yolo_common.checkpoint import atomic_write_json
    from yolo_common.data import list_images
    from yolo_common.draw import draw_boxes

    from .augment import DetectionTransform
    from .evaluate import load_detector
    from .postprocess import decode, to_image_coords

    try:
        files = list_images(a.source)
        model, meta = load_detector(a.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    names, S, B = meta["classes"], int(meta["config"]["S"]), int(meta["config"]["B"])
    tf = DetectionTransform(64 * S, train=False)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results, failed = [], []
    stems = [f.stem for f in files]
    for k, f in enumerate(files):
        try:
            with Image.open(f) as im:
                img = im.convert("RGB")
        except Exception as e:  # a bad file is named and skipped, the rest still run
            print(f"[yolov1.detect] skipped {f}: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(str(f))
            continue
        x, _, _ = tf(img, torch.zeros(0, 4).numpy(), torch.zeros(0, dtype=torch.int64).numpy())
        with torch.no_grad():
            det = decode(model(x[None]).float(), B, conf_threshold=a.conf, nms_iou=a.nms_iou,
                         max_detections=a.max_detections)[0]
        boxes = to_image_coords(det, img.width, img.height).tolist()
        dets = [{"class": names[int(c)], "score": float(s), "bbox": [round(v, 2) for v in b]}
                for b, s, c in zip(boxes, det["scores"].tolist(), det["labels"].tolist())]
        name = f.stem if stems.count(f.stem) == 1 else f"{k:05d}_{f.stem}"   # a recursive glob may repeat names
        draw_boxes(img, boxes, det["labels"].tolist(), names, det["scores"].tolist()).save(out / f"{name}.jpg",
                                                                                           quality=90)
        results.append({"file": str(f), "output": f"{name}.jpg", "width": img.width, "height": img.height, "detections": dets})
    atomic_write_json(out / "detections.json", {"checkpoint": meta["folder"], "images": results, "failed": failed})
    print(f"[yolov1.detect] {len(results)} images, {sum(len(r['detections']) for r in results)} detections"
          f"{f', {len(failed)} unreadable skipped' if failed else ''} -> {out}")
    return {"images": len(results), "failed": failed, "out": str(out)}


if __name__ == "__main__":
    main()
