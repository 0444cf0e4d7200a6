"""Shared library of the detection projects.

Submodules are imported explicitly (``from yolo_common.evaluation import coco_map``); importing the
package itself loads nothing heavy and changes no global state (no env vars, no logging config, no
torch settings). Map of the package:

- ``yolo_common.data``: one record type and readers/writers for the COCO, YOLO and VOC layouts,
  COCO 80<->91 id maps, provenance.
- ``yolo_common.synthetic``: seeded shapes detection set in all three layouts.
- ``yolo_common.evaluation``: ``coco_map`` (faster-coco-eval / pycocotools) and VOC AP.
- ``yolo_common.preprocess``: the letterbox every project trains and evaluates with.
- ``yolo_common.onnx_eval``: ONNX Runtime COCO evaluator (also ``python -m yolo_common.onnx_eval``).
- ``yolo_common.runlog``: run-root layout, JSONL/TensorBoard/curves, summary tables, optional W&B.
- ``yolo_common.device`` / ``yolo_common.distributed``: device resolution, autocast, torch.distributed, seeding.
- ``yolo_common.checkpoint``: atomic save, safe load, last/best.
- ``yolo_common.config``: typed parsing of command-line override strings (``parse_value``).
"""

__version__ = "0.1.0"
