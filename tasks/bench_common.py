"""bench-common: the two benchmarks of the shared library, each against a baseline measured in the same run.

    python tasks/bench_common.py [--quick]

(a) ``coco_map`` with faster-coco-eval vs pycocotools on a generated case (5,000 images x ~100 detections):
    time ratio and the largest difference over the 12 COCO stats.
(b) ``yolo_common.onnx_eval`` end to end vs a bare ONNX Runtime session loop on the same model and images:
    pipeline overhead in percent.
``--quick`` shrinks both (for a smoke check); the numbers quoted in the README come from the full run.
"""

from __future__ import annotations

import argparse

import bench_common_coco
import bench_common_onnx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, seconds instead of minutes")
    ns = ap.parse_args(argv)
    coco = bench_common_coco.run(num_images=200 if ns.quick else 5000, dets_per_image=100)
    onnx = bench_common_onnx.run(num_images=20 if ns.quick else 200)
    print("\n== bench-common ==")
    print(f"(a) coco_map: pycocotools / faster-coco-eval time ratio = {coco['ratio']:.2f}x, "
          f"largest |stat difference| = {coco['max_abs_diff']:.2e}")
    print(f"(b) ONNX evaluation pipeline vs bare ORT loop: overhead = {onnx['overhead_pct']:+.1f}% end to end "
          f"(COCO scoring is {onnx['scoring_share_pct']:.0f}% of the pipeline's time)")
    for row in onnx["loops"]:
        print(f"    loop only, batch {row['batch']}, ORT threads {row['intra_op_threads'] or 'default'}: sequential "
              f"{row['sequential_loop_overhead_pct']:+.1f}%, overlapped {row['overlap_loop_overhead_pct']:+.1f}%")
    if ns.quick:
        print(f"    --quick: with {onnx['num_images']} images the fixed costs (session, scoring) dominate these "
              f"percentages; the README's figures come from the full run (200 images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
