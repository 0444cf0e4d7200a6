"""Extract the 20-conv backbone from a pretraining checkpoint into ``backbone.safetensors``.

    python -m yolov1.extract_backbone <pretrained_dir> [<out>]

``<pretrained_dir>``: a checkpoint folder written by ``accelerator.save_state`` (``model.safetensors``
inside), a pretraining run folder (its newest checkpoint is used), or the ``model.safetensors`` file.
``<out>`` defaults to ``<checkpoint>/backbone.safetensors``. Pass the result to detection training as
``backbone=<out>``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> Path:
    from .checkpoints import extract_backbone

    ap = argparse.ArgumentParser(prog="python -m yolov1.extract_backbone", description=__doc__.splitlines()[0])
    ap.add_argument("pretrained", help="checkpoint folder, run folder or model.safetensors")
    ap.add_argument("out", nargs="?", default=None, help="output file (default <checkpoint>/backbone.safetensors)")
    a = ap.parse_args(argv)
    try:
        out = extract_backbone(a.pretrained, a.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    print(f"backbone written to {out}")
    return out


if __name__ == "__main__":
    main()
