"""Per-layer quantization report of a QAT model: which layers the 4-bit grid hurts, in numbers.

``<run-root>/qat-w4a16/quant_report.csv`` (+ ``.png``), one row per ``QuantConv2d``:

- ``bits``; ``levels_min`` / ``levels_median`` / ``levels_max``: distinct integer codes used per output channel
  (at most ``grid_levels`` = 2^bits - 1 with the narrow range: 15 at 4 bit). Few levels on a channel means the
  max-based (STATS) scale is set by an outlier and the rest of the channel shares a handful of values;
- ``mse`` and ``max_abs_err`` of the fake-quantized weight against its latent fp32 weight, and ``rel_mse`` =
  mse / mean(w^2), the error relative to the layer's own weight energy (comparable across layers);
- ``scale_min`` / ``scale_max``: the range of the per-channel scales.

The summary names the five layers with the largest ``rel_mse``. Cost: one ``quant_weight()`` per layer (about
10 ms each, ~1 s for yolov10n), on the CPU.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn

from .quant import _bit_width, integer_codes

COLUMNS = ["layer", "bits", "out_channels", "weights", "levels_min", "levels_median", "levels_max", "grid_levels",
           "mse", "max_abs_err", "rel_mse", "scale_min", "scale_max"]


@torch.no_grad()
def layer_rows(model: nn.Module) -> list[dict]:
    """One dict per quantized conv, in module order (see the module docstring for the columns)."""
    from brevitas.nn import QuantConv2d

    rows = []
    for name, layer in model.named_modules():
        if not isinstance(layer, QuantConv2d):
            continue
        qw = layer.quant_weight()
        codes = integer_codes(layer, qw).flatten(1)                       # (out_channels, k)
        levels = (codes.sort(dim=1).values.diff(dim=1) != 0).sum(dim=1) + 1
        w = layer.weight.detach().float()
        err = qw.value.float() - w
        scale = qw.scale.flatten().float()
        bits = _bit_width(layer)
        mse = float(err.pow(2).mean())
        rows.append({"layer": name, "bits": bits, "out_channels": int(codes.shape[0]), "weights": int(w.numel()),
                     "levels_min": int(levels.min()), "levels_median": float(levels.float().median()),
                     "levels_max": int(levels.max()), "grid_levels": 2 ** bits - 1, "mse": mse,
                     "max_abs_err": float(err.abs().max()),
                     "rel_mse": mse / max(float(w.pow(2).mean()), 1e-30),
                     "scale_min": float(scale.min()), "scale_max": float(scale.max())})
    return rows


def worst(rows: list[dict], n: int = 5) -> list[dict]:
    return sorted(rows, key=lambda r: -r["rel_mse"])[:n]


def write_quant_report(model: nn.Module, out_dir: str | Path, *, title: str = "QAT") -> dict:
    """Writes ``quant_report.csv`` and ``quant_report.png`` into ``out_dir``; returns their paths and the five
    layers with the largest relative error."""
    from yolo_common.checkpoint import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = layer_rows(model)
    if not rows:
        raise ValueError("no QuantConv2d layer in the model: nothing to report")
    lines = [",".join(COLUMNS)]
    for r in rows:
        lines.append(",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS))
    csv_path = out / "quant_report.csv"
    atomic_write_bytes(csv_path, ("\n".join(lines) + "\n").encode())
    png_path = out / "quant_report.png"
    _plot(rows, png_path, title)
    return {"csv": str(csv_path), "png": str(png_path), "layers": len(rows),
            "worst": [{k: r[k] for k in ("layer", "bits", "rel_mse", "levels_min", "levels_median")}
                      for r in worst(rows)]}


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(max(8.0, len(rows) * 0.09), 6), dpi=100, sharex=True)
    x = range(len(rows))
    colours = ["tab:red" if r["bits"] == 4 else "tab:blue" for r in rows]
    a.bar(x, [r["rel_mse"] for r in rows], color=colours)
    a.set_yscale("log")
    a.set_ylabel("rel. MSE (fake-quant vs fp32)")
    a.set_title(f"{title}: per-layer weight error (red 4 bit, blue 8 bit)")
    b.bar(x, [r["levels_median"] for r in rows], color=colours)
    b.plot(x, [r["levels_min"] for r in rows], "k.", ms=3, label="min per channel")
    b.set_ylabel("levels used (median)")
    b.set_xlabel("quantized conv, in module order")
    b.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def read_report(path: str | Path) -> list[dict]:
    """The rows of a ``quant_report.csv`` (numbers as float/int)."""
    with open(path, newline="") as f:
        out = []
        for r in csv.DictReader(f):
            out.append({k: (r[k] if k == "layer" else (int(r[k]) if r[k].lstrip("-").isdigit() else float(r[k])))
                        for k in COLUMNS})
        return out

