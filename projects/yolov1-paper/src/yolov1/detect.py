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
from collections.abc import Sequence


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
    from yolo_common.data import list_images
    from yolo_common.draw import DetectionWriter
    from yolo_common.preprocess import open_rgb

    from .augment import DetectionTransform
    from .engine import progress
    from .evaluate import load_detector
    from .postprocess import decode, to_image_coords

    try:
        files = list_images(a.source)
        model, meta = load_detector(a.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    names, S, B = meta["classes"], int(meta["config"]["S"]), int(meta["config"]["B"])
    tf = DetectionTransform(64 * S, train=False)
    writer = DetectionWriter(a.out, files, names, "yolov1.detect")
    for k, f in enumerate(progress(files, desc="detect", unit="img")):
        try:
            img = open_rgb(f)
        except OSError as e:  # a bad file is named and skipped, the rest still run
            writer.skip(f, str(e))
            continue
        x, _, _ = tf(img, torch.zeros(0, 4).numpy(), torch.zeros(0, dtype=torch.int64).numpy())
        with torch.no_grad():
            det = decode(model(x[None]).float(), B, conf_threshold=a.conf, nms_iou=a.nms_iou,
                         max_detections=a.max_detections)[0]
        boxes = to_image_coords(det, img.width, img.height).tolist()
        writer.add(k, f, img, boxes, det["labels"].tolist(), det["scores"].tolist())
    return writer.close(checkpoint=meta["folder"])

if __name__ == "__main__":
    main()
