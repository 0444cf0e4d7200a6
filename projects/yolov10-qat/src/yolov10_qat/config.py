"""The one config object of a run, its two presets, and the scratch recipe it carries.

A run is described by :class:`RunConfig` (grouped, commented defaults in the style of YOLOX's exp files).
``full_config()`` is the issue's COCO run (yolov10m.yaml, 640 px, 300 epochs); ``smoke_config()`` is the
few-minutes CPU run on the synthetic shapes set. CLI flags override single fields with ``dataclasses.replace``.
The recipe itself (optimizer, LR schedule, augmentation) lives in ``configs/hyp.scratch.yaml`` and is read by
:func:`load_hyp`; the config records which file it came from and the values it held.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_HYP = PROJECT_DIR / "configs" / "hyp.scratch.yaml"
SMOKE_HYP = PROJECT_DIR / "configs" / "hyp.smoke.yaml"   # the scratch recipe with AdamW (its header says why)
SCHEMES = ("w4", "w4-fl8")
PRESETS = ("full", "smoke")
DATA_KINDS = ("coco", "synthetic")


@dataclass
class RunConfig:
    """Everything a run needs; written to ``<run-root>/run.json`` and each model's ``config.json``."""

    preset: str = "full"

    # ---- data ---- #
    data: str = "coco"  # "coco" (COCO2017 layout under coco_dir) or "synthetic" (yolo_common's shapes set)
    coco_dir: str | None = None  # COCO2017 root; None -> env COCO_DIR
    max_train_images: int | None = None  # first N train images only (the "dry run on a small subset")
    max_val_images: int | None = None  # first N val images, for in-training val and the ONNX evaluation alike
    synthetic_train: int = 16  # synthetic set size (only for data="synthetic")
    synthetic_val: int = 8
    synthetic_size: int = 128  # synthetic image side in pixels
    # Decode every image once while preparing the data and leave the unreadable ones out (counted; minutes
    # on COCO). Off: ultralytics' label cache drops images whose header is corrupt, and one that fails to
    # decode during training is skipped and counted by SkipUnreadable.
    verify_images: bool = False

    # ---- model ---- #
    model: str = "yolov10m.yaml"  # an ultralytics model YAML: always random init, never a .pt
    imgsz: int = 640

    # ---- schedule ---- #
    epochs: int = 300
    batch: int = 32  # one RTX 5090 (32 GB) at 640 px with AMP; weight decay scales with batch*accumulate/64
    workers: int = 8  # dataloader workers (ultralytics forces 0 on CPU)
    hyp: str = str(DEFAULT_HYP)  # the scratch recipe; its train_args are passed to ultralytics verbatim
    amp: bool = True  # FP16 autocast + GradScaler on CUDA (ultralytics turns AMP off on CPU by itself)
    save_period: int = -1  # >0: also keep weights/epoch{N}.pt every N epochs

    # ---- quantization (the QAT model only) ---- #
    scheme: str = "w4"  # "w4": every conv but DFL at 4 bit; "w4-fl8": first conv + head output convs at 8 bit

    # ---- runtime ---- #
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    deterministic: bool = True  # ultralytics' deterministic flag (torch.use_deterministic_algorithms + cudnn)
    run_root: str | None = None  # None -> runs/yolov10-qat/<run-id> under the current directory

    # ---- export and evaluation ---- #
    opset: int = 17  # both exports; ORT's CUDA EP lacks some opset-18+ kernels and brevitas defaults to 13
    providers: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    eval_batch: int = 1  # images per ONNX Runtime call in the evaluation (latency is per image)

    # filled in from `hyp` by resolve(): the ultralytics arguments and the YOLOv5 keys that did not map
    train_args: dict = field(default_factory=dict)
    not_mapped: dict = field(default_factory=dict)

    def validate(self) -> RunConfig:
        """Raises ValueError on a value no step could run with."""
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.data not in DATA_KINDS:
            raise ValueError(f"data must be one of {DATA_KINDS}, got {self.data!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if not str(self.model).endswith((".yaml", ".yml")):
            raise ValueError(f"model must be an ultralytics model YAML (training is from scratch), got {self.model!r}")
        if self.imgsz % 32:
            raise ValueError(f"imgsz must be a multiple of 32 (the model's largest stride), got {self.imgsz}")
        for name in ("epochs", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        return self

    def resolve(self) -> RunConfig:
        """Validate and load the recipe from ``hyp`` into ``train_args`` / ``not_mapped``."""
        self.validate()
        hyp = load_hyp(self.hyp)
        self.train_args, self.not_mapped = hyp["train_args"], hyp["not_mapped"]
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["providers"] = list(self.providers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "providers" in d:
            d["providers"] = tuple(d["providers"])
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: not a yolov10-qat run root (no run.json)")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def full_config(**overrides) -> RunConfig:
    """The issue's run: YOLOv10m from scratch on COCO2017, 640 px, 300 epochs, on one GPU."""
    return dataclasses.replace(RunConfig(preset="full"), **overrides)


def smoke_config(**overrides) -> RunConfig:
    """About 4 minutes on 2 CPU cores, and both models learn: YOLOv10n, 128 px, 30 epochs, 192/32 synthetic
    images, batch 16, with ``configs/hyp.smoke.yaml`` (the scratch recipe with AdamW at 2e-3, a 1-epoch warm-up
    and close_mosaic 5: SGD at the scratch LR stays near mAP50 0.03 on this little data).
    """
    base = RunConfig(preset="smoke", data="synthetic", model="yolov10n.yaml", imgsz=128, epochs=30, batch=16,
                     synthetic_train=192, synthetic_val=32, hyp=str(SMOKE_HYP), workers=0, device="cpu", amp=False,
                     providers=("CPUExecutionProvider",))
    return dataclasses.replace(base, **overrides)


PRESET_BUILDERS = {"full": full_config, "smoke": smoke_config}


def load_hyp(path: str | Path) -> dict:
    """Read a recipe YAML: ``{"train_args": {...}, "not_mapped": {key: reason}}``.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: it has no ``train_args`` mapping, or a key ultralytics does not know (checked against
            ``ultralytics/cfg/default.yaml`` only when ultralytics is importable, which it always is here).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe file {path} does not exist")
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    args = doc.get("train_args")
    if not isinstance(args, dict) or not args:
        raise ValueError(f"{path}: expected a non-empty 'train_args' mapping")
    default_cfg = _ultralytics_default_cfg()
    if default_cfg is not None:
        unknown = sorted(set(args) - set(default_cfg))
        if unknown:
            raise ValueError(f"{path}: train_args {unknown} are not ultralytics trainer arguments")
    return {"train_args": dict(args), "not_mapped": dict(doc.get("not_mapped") or {})}


def _ultralytics_default_cfg() -> dict | None:
    # Read the YAML file itself rather than importing ultralytics (whose import has side effects).
    import importlib.util

    import yaml

    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return None
    f = Path(list(spec.submodule_search_locations)[0]) / "cfg" / "default.yaml"
    return yaml.safe_load(f.read_text(encoding="utf-8")) if f.is_file() else None
