"""``pixi run compare``: every project's exported detector on one dataset, with one scorer.

    python tasks/compare.py                                  # the latest smoke export of every project
    python tasks/compare.py projects/yolox-gaudi/runs/yolox-nano-smoke other.onnx --data /data/COCO --split val2017

Each argument is an ``.onnx`` file or a run folder (its ``*.onnx`` files, searched recursively). Every model
is scored by ``yolo_common.onnx_eval.evaluate_onnx`` on the same images, each with the letterbox and decode
settings its own metadata carries. The default images are a fresh synthetic shapes val set generated here with
a fixed seed: the same generator and classes (circle, square, triangle) as every project's smoke, but images
that no smoke trained on. ``--data`` takes a real dataset instead. Writes ``compare.md`` (project, model,
parameters, input size, AP / AP50 / AP75 / APs / APm / APl, latency mean / p90 at ``--batch``, images/s,
provider) and ``compare.png`` (AP against latency, one labelled point per model) to ``--out``. A model that
cannot be scored (a wrong contract, a class list that does not fit the data) is skipped with its reason and
listed under the table, and the others are still scored. Exit code: 0 when every model was scored, 3 when
some were skipped (the report is still written), 1 when none could be scored, 2 when there was nothing to score.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Where each project's smoke task leaves its export (newest match wins per pattern).
SMOKE_EXPORTS = {
    "yolox-gaudi": "projects/yolox-gaudi/runs/*/export/*.onnx",
    "yolov1-paper": "projects/yolov1-paper/runs/smoke/detect/export/*.onnx",
    "yolov10-qat": "projects/yolov10-qat/runs/yolov10-qat/*/onnx/*.onnx",
    "yolos-bf16accum": "projects/yolos-bf16accum/runs/*/export/*.onnx",
}
SYNTHETIC = {"num_train": 8, "num_val": 24, "image_size": 160, "seed": 1234}


def find_models(paths: list[str]) -> list[Path]:
    """``.onnx`` files named, or found under the folders named; default: the newest smoke exports."""
    found: list[Path] = []
    if paths:
        for p in map(Path, paths):
            if p.is_file() and p.suffix == ".onnx":
                found.append(p)
            elif p.is_dir():
                found += sorted(q for q in p.rglob("*.onnx") if not q.name.endswith(".tmp.onnx"))
            else:
                raise FileNotFoundError(f"{p}: neither an .onnx file nor a folder")
        return found
    for pattern in SMOKE_EXPORTS.values():
        hits = sorted(REPO.glob(pattern), key=lambda q: q.stat().st_mtime)
        hits = [h for h in hits if not h.name.endswith(".tmp.onnx")]
        if hits:
            newest_dir = hits[-1].parent
            found += sorted(h for h in hits if h.parent == newest_dir)
    return found


def project_of(path: Path) -> str:
    parts = path.resolve().parts
    return parts[parts.index("projects") + 1] if "projects" in parts else "-"


def onnx_params(path: Path) -> int:
    """Parameters = elements of the graph's initialisers (weights the file carries)."""
    import numpy as np
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return int(sum(int(np.prod(t.dims)) if t.dims else 1 for t in m.graph.initializer))


def synthetic_val(out: Path) -> tuple[Path, str]:
    from yolo_common.synthetic import make_synthetic

    root = make_synthetic(out / "synthetic", layouts=("coco",), **SYNTHETIC)["coco"]
    return root, "val"


def model_label(path: Path) -> str:
    """``<folder>/<file>``: every smoke export sits in an ``export/`` or ``onnx/`` folder, so the file alone
    says little; two runs of one project still collide (``compare`` adds ``#2``, ``#3``)."""
    return f"{path.parent.name}/{path.name}"


def compare(models: list[Path], data: Path, split: str, out: Path, *, batch: int = 1,
            skipped: list[dict] | None = None) -> list[dict]:
    """Scores every model; one that fails is appended to ``skipped`` ({"model", "reason"}) and the rest go on."""
    from yolo_common.onnx_eval import evaluate_onnx

    rows, used = [], {}
    for m in models:
        name = f"{project_of(m)}-{m.parent.name}-{m.stem}"
        k = used[name] = used.get(name, 0) + 1
        unique = name if k == 1 else f"{name}-{k}"    # the eval folder of each model is its own
        label = model_label(m) if k == 1 else f"{model_label(m)} #{k}"
        try:
            r = evaluate_onnx(m, data, split, out_dir=out / "eval" / unique, batch=batch,
                              providers=("CUDAExecutionProvider", "CPUExecutionProvider"), progress=False)
        except Exception as e:  # one bad export must not hide the others' numbers
            reason = f"{type(e).__name__}: {str(e)[:300]}"
            print(f"[compare] skipped {m}: {reason}", file=sys.stderr)
            if skipped is not None:
                skipped.append({"model": str(m), "reason": reason})
            continue
        c, lat = r["coco"], r["latency"]
        size = r["letterbox"]["size"]
        rows.append({"project": project_of(m), "model": label, "path": str(m), "params": onnx_params(m),
                     "input": "x".join(map(str, size)) if isinstance(size, list) else f"{size}x{size}",
                     **{k: c[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
                     "latency_ms": lat["inference_ms"]["mean"], "latency_p90_ms": lat["inference_ms"]["p90"],
                     "images_per_s": lat["images_per_s"], "provider": r["provider"], "contract": r["contract"]})
        print(f"[compare] {rows[-1]['project']}/{m.name}: AP {c['AP']:.4f} AP50 {c['AP50']:.4f}, "
              f"{lat['inference_ms']['mean']:.2f} ms/img")
    return rows


def write_report(rows: list[dict], out: Path, data: str, split: str, *, batch: int = 1,
                 skipped: list[dict] | None = None) -> None:
    from yolo_common.runlog import markdown_table

    out.mkdir(parents=True, exist_ok=True)
    table = [{"project": r["project"], "model": r["model"], "params": f"{r['params'] / 1e6:.2f} M",
              "input": r["input"], "AP": r["AP"], "AP50": r["AP50"], "AP75": r["AP75"], "APs": r["APs"],
              "APm": r["APm"], "APl": r["APl"], "latency ms (mean)": r["latency_ms"],
              "latency ms (p90)": r["latency_p90_ms"], "images/s": r["images_per_s"], "provider": r["provider"]}
             for r in rows]
    text = (f"# Detectors compared on {data} ({split})\n\nOne scorer for all: `yolo_common.onnx_eval.evaluate_onnx`, "
            f"each model with the preprocessing and decode settings its ONNX metadata carries; latency is "
            f"`session.run` per image at batch {batch} (AP -1 = no objects of that size).\n\n"
            f"{markdown_table(table, floatfmt='.4f') if table else '(no model could be scored)'}\n")
    if skipped:
        text += "\n## Skipped\n\n" + "".join(f"- `{x['model']}`: {x['reason']}\n" for x in skipped)
    (out / "compare.md").write_text(text)
    (out / "compare.json").write_text(json.dumps(rows, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    for r in rows:
        ax.scatter(r["latency_ms"], r["AP"], s=40)
        ax.annotate(f"{r['project']}\n{r['model']}", (r["latency_ms"], r["AP"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(f"latency, ms / image (session.run, batch {batch})")
    ax.set_ylabel("COCO AP (0.5:0.95)")
    ax.set_title(f"AP vs latency on {Path(data).name} / {split}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "compare.png")
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tasks/compare.py", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help=".onnx files or run folders (default: the newest smoke exports)")
    p.add_argument("--data", default=None, help="dataset root (default: the synthetic val set, fixed seed)")
    p.add_argument("--split", default=None, help="split (default: val)")
    p.add_argument("--out", default=str(REPO / "runs" / "compare"))
    p.add_argument("--batch", type=int, default=1)
    a = p.parse_args(argv)
    out = Path(a.out)
    try:
        models = find_models(a.paths)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not models:
        print("error: no exported models found; run the smoke tasks first (pixi run yolox-cpu-smoke, "
              "yolov1-smoke, ...) or name .onnx files", file=sys.stderr)
        return 2
    data, split = (Path(a.data), a.split or "val") if a.data else synthetic_val(out)
    skipped: list[dict] = []
    rows = compare(models, data, split, out, batch=a.batch, skipped=skipped)
    write_report(rows, out, str(data), split, batch=a.batch, skipped=skipped)
    print(f"[compare] {len(rows)} models scored, {len(skipped)} skipped -> {out / 'compare.md'}, {out / 'compare.png'}")
    if not rows:
        return 1
    return 3 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
