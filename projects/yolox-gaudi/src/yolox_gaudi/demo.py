"""``python -m yolox_gaudi.demo image|folder``: run a checkpoint on images, save annotated copies + a JSON.

    python -m yolox_gaudi.demo image -n yolox-s -c yolox_s.pth --path assets/dog.jpg --conf 0.25 --nms 0.45 \\
        --tsize 640 --save_result --device cpu
    python -m yolox_gaudi.demo folder -n yolox-nano -c runs/yolox-nano-smoke/checkpoints/best.pt --path imgs/

Megvii's ``tools/demo.py`` command line (``image`` takes one file, a folder or a glob here; ``folder`` is
the same). Boxes come from the EMA weights of a training checkpoint (its ``model`` entry), or an official
``.pth``; class names from the checkpoint (this project's runs store them), else COCO's for 80 classes,
else ``--names`` (a file with one name per line), else numbers. Output: ``<out>/<image>.jpg`` and
``<out>/detections.json`` (``[{"file", "width", "height", "detections": [{"class", "score", "bbox"
[x1, y1, x2, y2]}]}]`` in image pixels). An image that does not decode is named on stderr and skipped.
Preprocessing is the evaluation letterbox (``--preproc cv2`` / ``--legacy`` as in ``eval``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from .eval import _size

    p = argparse.ArgumentParser(prog="python -m yolox_gaudi.demo", description=__doc__.splitlines()[0])
    p.add_argument("demo", choices=("image", "folder", "video", "webcam"), help="image|folder (video: not here)")
    p.add_argument("-n", "--name", default="yolox-s")
    p.add_argument("-f", "--exp_file", default=None, help="experiment file (class Exp); wins over --name")
    p.add_argument("-c", "--ckpt", required=True, help="checkpoint (.pt of a run, or Megvii .pth)")
    p.add_argument("--path", required=True, help="an image, a folder of images or a glob")
    p.add_argument("--conf", type=float, default=0.3, help="score threshold (Megvii's demo: 0.3)")
    p.add_argument("--nms", type=float, default=0.3, help="NMS IoU (Megvii's demo: 0.3)")
    p.add_argument("--tsize", type=_size, default=None, help="input size S or H,W (default: the config's)")
    p.add_argument("--device", default="cpu", help="cpu|gpu|cuda|hpu|auto (gpu = cuda, as Megvii)")
    p.add_argument("--fp16", action="store_true", help="fp16 autocast (CUDA)")
    p.add_argument("--preproc", choices=("pil", "cv2"), default="pil")
    p.add_argument("--legacy", action="store_true", help="Megvii's --legacy normalisation (old weights)")
    p.add_argument("--names", default=None, help="class names file (one per line)")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--save_result", action="store_true", help="accepted (results are always saved)")
    return p


def class_names(ck: dict, num_classes: int, names_file: str | None) -> list[str]:
    """The checkpoint's names, else ``names_file``, else COCO's (80 classes), else "0", "1", ..."""
    if names_file:
        names = [ln.strip() for ln in Path(names_file).read_text().splitlines() if ln.strip()]
        if len(names) != num_classes:
            raise ValueError(f"{names_file} has {len(names)} names but the model has {num_classes} classes")
        return names
    if ck.get("class_names") and len(ck["class_names"]) == num_classes:
        return list(ck["class_names"])
    if num_classes == 80:
        from yolo_common.data import COCO_CLASSES

        return list(COCO_CLASSES)
    return [str(k) for k in range(num_classes)]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.demo in ("video", "webcam"):
        print("error: video/webcam demos are not implemented here; extract frames and use `image --path "
              "frames/`", file=sys.stderr)
        return 2
    from .config import get_exp, load_exp_file

    try:
        exp = (load_exp_file(args.exp_file) if args.exp_file else get_exp(args.name))
        return run(args, exp)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args, exp) -> int:
    import torch
    from yolo_common.checkpoint import load_checkpoint
    from yolo_common.data import DatasetSplit, ImageRecord, list_images
    from yolo_common.device import autocast, resolve_device
    from yolo_common.draw import DetectionWriter
    from yolo_common.preprocess import read_image, unletterbox_boxes

    from .data import EvalDataset
    from .engine import postprocess
    from .model import build_from_checkpoint

    files = list_images(args.path)
    ck = load_checkpoint(args.ckpt)
    # a run's checkpoint knows its classes, act, size...; --tsize still wins
    model = build_from_checkpoint(exp, ck, args.ckpt, use_checkpoint_exp=not args.exp_file, extra=("test_size",))
    if args.tsize is not None:
        exp.test_size = args.tsize
    names = class_names(ck, exp.num_classes, args.names)
    device = resolve_device("cuda" if args.device == "gpu" else args.device)
    model.to(device).eval()
    records = [ImageRecord(image_id=k, path=f, width=1, height=1) for k, f in enumerate(files)]
    ds = EvalDataset(DatasetSplit(records, [], Path("."), "demo", "coco"), exp.test_size,
                     "legacy" if args.legacy else args.preproc)
    writer = DetectionWriter(args.out, files, names, "yolox_gaudi.demo")
    for k, f in enumerate(files):
        try:
            x, meta, _ = ds[k]
            img = read_image(f)
        except OSError as e:
            writer.skip(f, e)
            continue
        with torch.no_grad(), (autocast(device, "fp16") if args.fp16 else torch.autocast("cpu", enabled=False)):
            pred = model(x[None].to(device)).float().cpu()
        det = postprocess(pred, args.conf, args.nms, exp.max_dets)[0]
        boxes = unletterbox_boxes(det[:, :4].numpy(), meta) if len(det) else det[:, :4].numpy()
        writer.add(k, f, img, boxes, det[:, 5].long().tolist(), det[:, 4].tolist())
    writer.close(checkpoint=str(args.ckpt), model=exp.name)
    return 0

if __name__ == "__main__":
    sys.exit(main())
