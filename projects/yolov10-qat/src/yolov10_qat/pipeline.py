"""The run, step by step: data -> fp16 -> qat-w4a16 -> export -> eval -> summary, all under one run root.

Run-root contract (``runs/yolov10-qat/<run-id>/``)::

    run.json                 the RunConfig (recipe included); state.json: finished steps + facts they found
    dataset.yaml             the YOLO data.yaml both trainers use; provenance.json (yolo_common)
    data/                    the converted YOLO tree (hardlinks + labels; synthetic set when --data synthetic)
    fp16/  qat-w4a16/        args.yaml (ultralytics), config.json (ours), tb/, logs/*.jsonl,
                             curves/loss.csv + loss.png, weights/{best,last}.pt, results.csv
    onnx/                    <model>-baseline-<imgsz>.onnx, <model>-qat-<scheme>-qcdq-<imgsz>.onnx
    baseline-coco/  qat-w4a16-coco/   metrics.json + detections.json (yolo_common.onnx_eval)
    summary.md

Every step records itself in ``state.json`` when it finishes, so ``run --resume <run-root>`` skips finished
steps, resumes an interrupted training from its ``weights/last.pt`` (ultralytics' resume: epoch counter,
optimizer, EMA, scaler continue) and then runs whatever is left.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import RunConfig

STEPS = ("data", "fp16", "qat", "export", "eval", "summary")
TRAIN_DIRS = {"fp16": "fp16", "qat": "qat-w4a16"}
EVAL_DIRS = {"baseline": "baseline-coco", "qat": "qat-w4a16-coco"}


def default_run_root(cfg: RunConfig) -> Path:
    return Path.cwd() / "runs" / "yolov10-qat" / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.preset}"


def _log(msg: str) -> None:
    print(f"[yolov10-qat] {msg}", flush=True)


class Run:
    """A run root: its config and the state of its steps."""

    def __init__(self, root: str | Path, cfg: RunConfig, *, trust_checkpoint: bool = False):
        self.root = Path(root).resolve()
        self.cfg = cfg
        # --trust-checkpoint: a weights/*.pt this package did not record writing may be unpickled (warns)
        self.trust_checkpoint = trust_checkpoint

    # ---- creation and loading ----
    @classmethod
    def create(cls, cfg: RunConfig) -> Run:
        """Resolve ``cfg``, pick its root (``cfg.run_root`` or a new ``runs/yolov10-qat/<id>``), write run.json."""
        cfg.resolve()
        root = Path(cfg.run_root) if cfg.run_root else default_run_root(cfg)
        if (root / "run.json").exists():
            raise FileExistsError(f"{root} already holds a run; continue it with --resume {root}")
        cfg.run_root = str(root.resolve())
        run = cls(root, cfg)
        run.root.mkdir(parents=True, exist_ok=True)
        cfg.save(run.root / "run.json")
        run.save_state({"steps": {}})
        return run

    @classmethod
    def open(cls, root: str | Path, **overrides) -> Run:
        """An existing run root; ``overrides`` may change only where it runs (device, workers, providers)."""
        root = Path(root)
        cfg = RunConfig.load(root / "run.json")
        allowed = {"device", "workers", "providers"}
        bad = sorted(k for k, v in overrides.items() if v is not None and k not in allowed)
        if bad:
            raise ValueError(f"--resume continues the recorded run; {bad} cannot change (only {sorted(allowed)})")
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cls(root, cfg)

    # ---- state ----
    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def state(self) -> dict:
        return json.loads(self.state_path.read_text(encoding="utf-8")) if self.state_path.is_file() else {"steps": {}}

    def save_state(self, state: dict) -> None:
        from yolo_common.checkpoint import atomic_write_json

        atomic_write_json(self.state_path, state)

    def mark(self, step: str, **facts) -> None:
        st = self.state()
        st["steps"][step] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **facts}
        st.update(facts)
        self.save_state(st)

    def done(self, step: str) -> bool:
        return step in self.state()["steps"]

    # ---- steps ----
    def data(self):
        from .data import prepare_data

        rd = prepare_data(self.cfg, self.root)
        if not self.done("data"):
            self.mark("data", num_train=rd.num_train, num_val=rd.num_val)
            _log(f"data: {rd.num_train} train / {rd.num_val} val images -> {rd.dataset_yaml}")
        return rd

    def train(self, kind: str) -> Path:
        """Train ``kind`` (``fp16`` or ``qat``), resuming from ``last.pt`` if an earlier attempt left one."""
        from .trainer import build_trainer

        folder = self.root / TRAIN_DIRS[kind]
        best = folder / "weights" / "best.pt"
        if self.done(kind):
            _log(f"{kind}: already trained ({best})")
            return best
        rd = self.data()
        last = folder / "weights" / "last.pt"
        resume = last if last.is_file() and not _finished_checkpoint(last, self.trust_checkpoint) else None
        if last.is_file() and resume is None:
            _log(f"{kind}: {last} is a finished training; not training again")
        else:
            _log(f"{kind}: {'resuming from ' + str(resume) if resume else 'training from scratch'} -> {folder}")
            trainer = build_trainer(kind, self.cfg, rd.dataset_yaml, folder, resume=resume,
                                    trust=self.trust_checkpoint)
            trainer.train()
        facts = {}
        if kind == "qat":
            from .trainer import load_qat_checkpoint

            _, ckpt = load_qat_checkpoint(best, trust=self.trust_checkpoint)
            bits = ckpt["brevitas_qat"]["layers"]
            facts["qat_layers"] = {"total": len(bits), "w4": sum(b == 4 for b in bits.values()),
                                   "w8": sum(b == 8 for b in bits.values()), "scheme": self.cfg.scheme}
        self.mark(kind, weights=str(best), **facts)
        return best

    def export(self) -> dict[str, Path]:
        from .export import count_qcdq, export_checkpoint, onnx_name

        rd = self.data()
        out = {}
        for kind, folder in (("baseline", "fp16"), ("qat", "qat-w4a16")):
            path = self.root / "onnx" / onnx_name(kind, self.cfg.model, self.cfg.imgsz, self.cfg.scheme)
            _log(f"export {kind} -> {path}")
            export_checkpoint(kind, self.root / folder / "weights" / "best.pt", path, self.cfg.imgsz,
                              rd.class_names, opset=self.cfg.opset, trust=self.trust_checkpoint)
            out[kind] = path
        counts = count_qcdq(out["qat"])
        files = self.deploy_files(out)
        self.mark("export", onnx={k: str(v) for k, v in out.items()}, qcdq=counts, files=files)
        return out

    def deploy_files(self, out: dict[str, Path]) -> dict[str, dict]:
        """The QCDQ file as INT4 (opset 21) and as folded float (``int4.py``), and the size on disk and batch-1
        CPU latency of all four files, for the summary's "Model files" table."""
        from .int4 import latency_ms, to_folded, to_int4

        qcdq = out["qat"]
        paths = {"baseline (fp32)": out["baseline"], "QAT QCDQ": qcdq,
                 "QAT INT4": to_int4(qcdq, qcdq.with_name(qcdq.name.replace("-qcdq-", "-int4-"))),
                 "QAT folded float": to_folded(qcdq, qcdq.with_name(qcdq.name.replace("-qcdq-", "-folded-")))}
        _log(f"export qat int4 -> {paths['QAT INT4']}, folded -> {paths['QAT folded float']}")
        return {k: {"path": str(v), "bytes": v.stat().st_size, "latency_ms": latency_ms(v, self.cfg.imgsz)}
                for k, v in paths.items()}

    def evaluate(self) -> dict[str, dict]:
        from yolo_common.onnx_eval import evaluate_onnx, summary_table

        rd = self.data()
        onnx = self.state().get("onnx") or {k: str(v) for k, v in self.export().items()}
        results = {}
        for kind in ("baseline", "qat"):
            out_dir = self.root / EVAL_DIRS[kind]
            _log(f"eval {kind}: {onnx[kind]} on {rd.eval_data} [{rd.eval_split}]")
            results[kind] = evaluate_onnx(onnx[kind], rd.eval_data, rd.eval_split, out_dir=out_dir,
                                          providers=list(self.cfg.providers), batch=self.cfg.eval_batch,
                                          max_images=self.cfg.max_val_images, progress=True)
            print(summary_table(results[kind]), flush=True)
            write_samples(self.root, kind, rd.eval_data, rd.eval_split, out_dir / "detections.json",
                          self.cfg.max_val_images)
        self.mark("eval", metrics={k: str(self.root / EVAL_DIRS[k] / "metrics.json") for k in results})
        return results

    def quant_report(self) -> dict:
        """``qat-w4a16/quant_report.{csv,png}`` from the QAT model's best checkpoint (``quant_report.py``)."""
        from .quant_report import write_quant_report
        from .trainer import load_qat_checkpoint

        model, _ = load_qat_checkpoint(self.root / TRAIN_DIRS["qat"] / "weights" / "best.pt",
                                       trust=self.trust_checkpoint)
        rep = write_quant_report(model, self.root / TRAIN_DIRS["qat"], title=f"QAT {self.cfg.scheme}")
        _log(f"quant report: {rep['csv']} (largest relative error: {rep['worst'][0]['layer']})")
        self.mark("quant_report", quant_report=rep)
        return rep

    def summary(self) -> Path:
        from .report import write_summary

        path = write_summary(self.root)
        self.mark("summary", summary=str(path))
        return path

    def run_all(self) -> Path:
        """Every step not finished yet, in order; returns the summary path."""
        _log(f"run root: {self.root}")
        self.data()
        self.train("fp16")
        self.train("qat")
        if not self.done("export"):
            self.export()
        if not self.done("eval"):
            self.evaluate()
        if not self.done("quant_report"):
            self.quant_report()
        path = self.summary()
        _log(f"done: {path}")
        return path


def _finished_checkpoint(path: Path, trust: bool = False) -> bool:
    """True for a checkpoint ultralytics has stripped after the last epoch (``epoch == -1``, no optimizer).

    Read from ``weights/checksums.json`` when the file is the one this package recorded; otherwise only
    with ``trust`` (it means unpickling); an unknown file counts as unfinished, so the resume that follows
    reports it (``UntrustedCheckpoint``, or ultralytics' own error for a torn file).
    """
    from . import safe_ckpt

    entry = safe_ckpt.recorded(path)
    if entry is not None:
        return bool(entry.get("finished"))
    if not trust:
        return False
    try:
        ckpt = safe_ckpt.load_pickle(path, trust=True)
    except Exception:  # a torn file: let ultralytics' resume report it properly
        return False
    return ckpt.get("epoch", -1) == -1 and ckpt.get("optimizer") is None


def write_samples(root: Path, kind: str, data, split: str, detections_json: Path, max_images: int | None) -> Path:
    """``samples/<kind>.png``: the first val images, ground truth | the ONNX model's detections (common's
    ``samples_grid``), linked from summary.md."""
    import json

    from yolo_common.data import load_split
    from yolo_common.draw import samples_grid

    ds = load_split(data, split)
    records = ds.records[:max_images] if max_images else ds.records
    return Path(samples_grid(records, json.loads(Path(detections_json).read_text()), ds.categories,
                             Path(root) / "samples" / f"{kind}.png", n=4))
