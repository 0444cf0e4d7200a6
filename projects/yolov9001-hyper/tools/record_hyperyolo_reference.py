"""Record reference outputs of the ORIGINAL Hyper-YOLO into ``tests/data/hyperyolo_reference.npz``.

This script needs a checkout of the original Hyper-YOLO code base (iMoonLab/Hyper-YOLO, an ultralytics
8.0.227 fork) at commit ``bd4d2c490cf3c199599ddfbb295bc52a4372fa59``; pass its folder with ``--fork``.
It imports the fork's own ``ultralytics`` package from there (put first on ``sys.path``) and copies none
of its code into this project. It was run once to make the fixture; the parity test only reads the .npz::

    git clone https://github.com/iMoonLab/Hyper-YOLO "$HYPERYOLO" && git -C "$HYPERYOLO" checkout bd4d2c4
    python tools/record_hyperyolo_reference.py --fork "$HYPERYOLO" --out tests/data/hyperyolo_reference.npz

For each scale n, s, l (``hyper-yolo.yaml``) and t (``hyper-yolot.yaml``) it builds the fork's
``DetectionModel(cfg, ch=3, nc=80)``, loads ``deterministic_state_dict(model.state_dict())`` (from
``tools/reference_weights.py``, strict) and runs the eval forward on ``reference_input(1, 160, seed=0)``.
Stored per scale ``<s>``:

* ``<s>_y``              float32 [1, 84, A]: decoded boxes (cx, cy, w, h in pixels) + 80 sigmoid scores
* ``<s>_params``         int64 scalar: sum of ``p.numel()`` over ``model.parameters()``
* ``<s>_hyperedge_mean`` float64 scalar: mean hyperedge size in the HyperComputeModule, i.e. the number
  of vertex pairs (self-pairs included) with ``cdist < threshold`` divided by ``B * H * W``, measured on
  the module's input during the reference forward
* ``<s>_keys``           str array: ``"name:shape"`` per state-dict entry in state-dict order, the shape
  joined by ``x`` (e.g. ``model.0.conv.weight:16x3x3x3``); a 0-d entry has an empty shape (``name:``)

plus ``commit`` (the fork's full sha, read from ``--commit`` or from ``git rev-parse HEAD`` in the fork,
falling back to the sha above) and ``torch_version``.

Note: with these weights and this input every pairwise distance at the HyperComputeModule (max about
0.35 / 0.58 / 0.36 / 0.84 for n / s / t / l) is far below its threshold (6 / 8 / 6 / 10), so the
hypergraph is complete and ``<s>_hyperedge_mean`` equals H*W = 100. So scale n is recorded a second time
(``n_sparse_y``, ``n_sparse_threshold``, ``n_sparse_hyperedge_mean``) with the threshold set to the median
pairwise distance, where about half the pairs are in: that case checks the threshold rule itself.

Compatibility patches: none were needed with torch 2.15 / numpy 2.4 (the fork imports and runs as is).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

EXPECTED_COMMIT = "bd4d2c490cf3c199599ddfbb295bc52a4372fa59"
SCALES = (("n", "hyper-yolo.yaml"), ("s", "hyper-yolo.yaml"), ("t", "hyper-yolot.yaml"), ("l", "hyper-yolo.yaml"))
HERE = Path(__file__).resolve().parent


def fork_commit(fork: Path, given: str | None) -> str:
    """The sha to record: --commit, else the fork's own git HEAD, else EXPECTED_COMMIT (with a warning)."""
    if given:
        return given
    try:
        top = subprocess.run(["git", "-C", str(fork), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.split()
        # a `git archive` export lying inside some other repository would report that repository's HEAD
        if len(top) == 2 and Path(top[0]).resolve() == fork and len(top[1]) == 40:
            return top[1]
    except (OSError, subprocess.CalledProcessError):
        pass
    print(f"warning: {fork} is not a git checkout; recording commit {EXPECTED_COMMIT} (pass --commit to override)")
    return EXPECTED_COMMIT


def shape_str(t) -> str:
    return "x".join(str(int(d)) for d in t.shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fork", required=True, type=Path, help="Hyper-YOLO checkout (folder holding ultralytics/)")
    ap.add_argument("--out", default="tests/data/hyperyolo_reference.npz", type=Path)
    ap.add_argument("--commit", default=None, help="fork sha to record (default: git rev-parse HEAD in --fork)")
    ap.add_argument("--size", default=160, type=int)
    args = ap.parse_args()
    fork = args.fork.resolve()

    # Keep the fork's settings file and any network access away from the user's environment.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="hyperyolo_cfg_"))
    sys.path.insert(0, str(fork))
    sys.path.insert(0, str(HERE))

    import torch
    import yaml

    import ultralytics
    from ultralytics.nn.modules import HyperComputeModule
    from ultralytics.nn.tasks import DetectionModel

    from reference_weights import deterministic_state_dict, reference_input

    if not Path(ultralytics.__file__).resolve().is_relative_to(fork):
        raise SystemExit(f"imported ultralytics from {ultralytics.__file__}, not from the fork {fork}")
    print(f"ultralytics {ultralytics.__version__} from {ultralytics.__file__}; torch {torch.__version__}")

    torch.manual_seed(0)
    cfg_dir = fork / "ultralytics" / "cfg" / "models" / "hyper-yolo"
    x = reference_input(1, args.size, seed=0)
    arrays: dict[str, np.ndarray] = {}
    for scale, yaml_name in SCALES:
        d = yaml.safe_load((cfg_dir / yaml_name).read_text())
        d["scale"] = scale  # explicit scale, so the fork's filename guess is not used
        model = DetectionModel(d, ch=3, nc=80, verbose=False)
        params = sum(p.numel() for p in model.parameters())
        sd = model.state_dict()
        model.load_state_dict(deterministic_state_dict(sd), strict=True)
        model.eval()

        hcms = [m for m in model.modules() if isinstance(m, HyperComputeModule)]
        assert len(hcms) == 1, f"expected one HyperComputeModule, found {len(hcms)}"
        hcm = hcms[0]
        sizes = []

        def hook(module, inputs, output):
            v = inputs[0]
            b, c, h, w = v.shape
            v = v.reshape(b, c, h * w).transpose(1, 2)
            n_pairs = (torch.cdist(v, v) < module.threshold).sum().item()
            sizes.append(n_pairs / (b * h * w))

        handle = hcm.register_forward_hook(hook)
        with torch.no_grad():
            out = model(x.clone())
        handle.remove()
        y = out[0] if isinstance(out, (tuple, list)) else out
        assert len(sizes) == 1

        arrays[f"{scale}_y"] = y.detach().float().numpy().astype(np.float32)
        arrays[f"{scale}_params"] = np.array(params, dtype=np.int64)
        arrays[f"{scale}_hyperedge_mean"] = np.array(sizes[0], dtype=np.float64)
        arrays[f"{scale}_keys"] = np.array([f"{k}:{shape_str(v)}" for k, v in sd.items()])
        if scale == "n":
            # A second case with a partial hypergraph: at these weights every pair is closer than the published
            # threshold, so the threshold itself is exercised only with a smaller one, the median distance.
            dists = []
            grab = hcm.register_forward_hook(lambda m, i, o: dists.append(
                torch.cdist(*(i[0].flatten(2).transpose(1, 2),) * 2).flatten()))
            with torch.no_grad():
                model(x.clone())
            grab.remove()
            hcm.threshold = float(round(dists[0].median().item(), 4))
            sizes.clear()
            handle = hcm.register_forward_hook(hook)
            with torch.no_grad():
                sparse = model(x.clone())[0]
            handle.remove()
            arrays["n_sparse_y"] = sparse.float().numpy().astype(np.float32)
            arrays["n_sparse_threshold"] = np.array(hcm.threshold, dtype=np.float64)
            arrays["n_sparse_hyperedge_mean"] = np.array(sizes[0], dtype=np.float64)
            print(f"n sparse: threshold={hcm.threshold} hyperedge_mean={sizes[0]:.4f}")
        print(f"{scale}: params={params:,} y={tuple(y.shape)} "
              f"hyperedge_mean={float(arrays[f'{scale}_hyperedge_mean']):.4f} "
              f"stride={model.model[-1].stride.tolist()} keys={len(sd)}")

    arrays["commit"] = np.array(fork_commit(fork, args.commit))
    arrays["torch_version"] = np.array(torch.__version__)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
