"""Convert an original Hyper-YOLO checkpoint (iMoonLab/Hyper-YOLO, an ultralytics 8.0.227 fork) into this
project's checkpoint format, so ``9001.py val|detect|export|train --weights`` can use it.

    python tools/convert_hyperyolo_checkpoint.py --fork /path/to/Hyper-YOLO --ckpt hyper-yolon.pt \
        --out hyper-yolon-9001.pt [--scale n]

The original files are full pickles of the fork's model classes: reading them needs the fork's code on the
path and **runs code from the file** (``torch.load(weights_only=False)``), so this is a one-off step for
files you trust, never done by the platform itself. The output holds only tensors, numbers and strings
(``{"model": state_dict, "config", "names"}``) and loads with ``weights_only=True``. No renaming is needed:
the state-dict names (``model.<i>...``) and shapes are the original's (tests/test_model.py checks them
against the fork at bd4d2c4); the conversion loads the weights into ``HyperYOLO`` with ``strict=True`` to prove it.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fork", required=True, type=Path, help="Hyper-YOLO checkout (the folder holding ultralytics/)")
    ap.add_argument("--ckpt", required=True, type=Path, help="original checkpoint (.pt, trusted)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--scale", default=None, help="n s m l x t (default: read from the checkpoint's yaml)")
    args = ap.parse_args()

    sys.path.insert(0, str(args.fork.resolve()))
    import torch
    from yolo_common.checkpoint import save_checkpoint

    from yolov9001.core.config import get_config
    from yolov9001.models import HyperYOLO

    warnings.warn(f"{args.ckpt}: loading a full pickle (weights_only=False); only do this for trusted files",
                  stacklevel=1)
    ck = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    net = ck.get("ema") or ck.get("model") if isinstance(ck, dict) else ck
    if net is None or not hasattr(net, "state_dict"):
        raise SystemExit(f"{args.ckpt}: no 'ema' or 'model' module in this checkpoint")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    yaml = getattr(net, "yaml", {}) or {}
    scale = args.scale or yaml.get("scale") or ("t" if "yolot" in str(yaml.get("yaml_file", "")) else None)
    if scale not in ("n", "s", "m", "l", "x", "t"):
        raise SystemExit(f"cannot tell the scale of {args.ckpt} (yaml scale {yaml.get('scale')!r}): pass --scale")
    names = getattr(net, "names", None) or {}
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    nc = int(getattr(net, "nc", 0) or len(names) or sd["model.32.cv3.0.2.bias"].numel())
    names = names or [f"class_{i}" for i in range(nc)]
    model = HyperYOLO(scale, nc=nc)
    model.load_state_dict(sd, strict=True)  # names and shapes must match exactly
    cfg = get_config(hyp={"model_scale": scale, "nc": nc})
    save_checkpoint({"model": model.state_dict(), "ema": None, "config": cfg.to_dict(), "names": names,
                     "epoch": -1, "source": str(args.ckpt)}, args.out)
    print(f"wrote {args.out}: Hyper-YOLO-{scale.upper()}, nc {nc}, {sum(v.numel() for v in sd.values()):,} values")


if __name__ == "__main__":
    main()
