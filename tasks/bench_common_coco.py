"""Benchmark: yolo_common.evaluation.coco_map with faster-coco-eval vs pycocotools on a random COCO case.

    python tasks/bench_common_coco.py                      # 5000 images x 100 detections (val2017-sized)
    python tasks/bench_common_coco.py --num-images 500     # a quick look

Each backend runs once (evaluate + accumulate + summarize, plus coco_map's input copying, which both
pay). pycocotools takes about a minute at full size; faster-coco-eval a few seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

# COCO's 80 category ids out of 1..90 (the 10 gaps are categories dropped before release).
COCO_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]


def make_case(num_images: int, dets_per_image: int, seed: int, gt_per_image: float = 7.3):
    """A COCO GT dict and a result list shaped like a detector's output on val2017.

    ~7 GT per image (Poisson), sides log-uniform 4..500 px (all three area buckets), 1% crowd. Each
    image gets exactly ``dets_per_image`` results: a jittered copy of most GT boxes (10% relabelled)
    scored high-ish, the rest random boxes scored low-ish.
    """
    rng = np.random.default_rng(seed)
    W, H = 640, 480
    ids = np.array(COCO_IDS)
    images, anns, dets = [], [], []
    for img_id in range(1, num_images + 1):
        images.append({"id": img_id, "width": W, "height": H, "file_name": f"{img_id:012d}.jpg"})
        n = int(rng.poisson(gt_per_image))
        wh = np.exp(rng.uniform(np.log(4), np.log(500), (n, 2)))
        wh = np.minimum(wh, [W, H])
        xy = rng.uniform(0, 1, (n, 2)) * ([W, H] - wh)
        boxes = np.concatenate([xy, wh], 1)
        cats = rng.choice(ids, n)
        crowd = rng.random(n) < 0.01
        for b, c, cr in zip(boxes.tolist(), cats.tolist(), crowd.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": c, "bbox": b,
                         "area": b[2] * b[3], "iscrowd": int(cr)})

        hit = rng.random(n) < 0.8
        n_tp = min(int(hit.sum()), dets_per_image)
        tp = boxes[hit][:n_tp] + rng.normal(0, 0.07, (n_tp, 4)) * np.tile(boxes[hit][:n_tp, 2:], 2)
        tp[:, 2:] = np.maximum(tp[:, 2:], 1.0)
        tp_cats = np.where(rng.random(n_tp) < 0.9, cats[hit][:n_tp], rng.choice(ids, n_tp))
        n_fp = dets_per_image - n_tp
        fwh = np.exp(rng.uniform(np.log(4), np.log(500), (n_fp, 2)))
        fwh = np.minimum(fwh, [W, H])
        fp = np.concatenate([rng.uniform(0, 1, (n_fp, 2)) * ([W, H] - fwh), fwh], 1)
        all_boxes = np.concatenate([tp, fp]).tolist()
        all_cats = np.concatenate([tp_cats, rng.choice(ids, n_fp)]).tolist()
        scores = np.concatenate([rng.uniform(0.2, 1.0, n_tp), rng.uniform(0.0, 0.6, n_fp)]).tolist()
        for b, c, s in zip(all_boxes, all_cats, scores):
            dets.append({"image_id": img_id, "category_id": c, "bbox": b, "score": s})
    gt = {"info": {"description": "bench_common_coco random case"}, "images": images, "annotations": anns,
          "categories": [{"id": i, "name": f"class_{i}"} for i in COCO_IDS]}
    return gt, dets


def run(num_images: int = 5000, dets_per_image: int = 100, seed: int = 0) -> dict:
    """Time both backends on one random case and compare their 12 stats.

    Returns:
        ``{"num_images", "num_gt", "num_dets", "faster_s", "pycocotools_s", "ratio", "max_abs_diff",
        "AP"}``; ratio is pycocotools time / faster time, max_abs_diff the largest |difference| over
        the 12 COCO stats.
    """
    from yolo_common.evaluation import COCO_STAT_NAMES, coco_map

    print(f"[bench-common] building case: {num_images} images x {dets_per_image} dets (seed {seed})", flush=True)
    t0 = time.perf_counter()
    gt, dets = make_case(num_images, dets_per_image, seed)
    print(f"[bench-common] {len(gt['annotations'])} GT, {len(dets)} detections "
          f"in {time.perf_counter() - t0:.1f}s", flush=True)

    results, times = {}, {}
    for backend in ("faster", "pycocotools"):
        print(f"[bench-common] coco_map backend={backend} ...", flush=True)
        t0 = time.perf_counter()
        results[backend] = coco_map(gt, dets, backend=backend, per_class=False)
        times[backend] = time.perf_counter() - t0
        print(f"[bench-common]   done in {times[backend]:.2f}s (AP {results[backend]['AP']:.4f})", flush=True)

    diff = max(abs(results["faster"][k] - results["pycocotools"][k]) for k in COCO_STAT_NAMES)
    out = {
        "num_images": num_images,
        "num_gt": len(gt["annotations"]),
        "num_dets": len(dets),
        "faster_s": times["faster"],
        "pycocotools_s": times["pycocotools"],
        "ratio": times["pycocotools"] / times["faster"],
        "max_abs_diff": diff,
        "AP": results["faster"]["AP"],
    }
    print()
    print(f"{'backend':<26}{'time (s)':>8}")
    print(f"{results['faster']['backend']:<26}{times['faster']:>8.2f}")
    print(f"{results['pycocotools']['backend']:<26}{times['pycocotools']:>8.2f}")
    print(f"ratio pycocotools / faster: {out['ratio']:.1f}x")
    print(f"max |diff| over the 12 stats: {diff:.2e}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=5000)
    ap.add_argument("--dets-per-image", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    run(a.num_images, a.dets_per_image, a.seed)


if __name__ == "__main__":
    main()
