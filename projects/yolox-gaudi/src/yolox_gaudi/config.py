"""Experiment configs: Megvii's ``Exp`` defaults as one dataclass, one small subclass per model size.

Overrides come as trailing ``key value`` pairs on the command line (``max_epoch 300 save_history_ckpt
False``), exactly like Megvii's ``Exp.merge``, except that every value is parsed against the field's
declared type: ``"False"`` is False (upstream's ``bool("False")`` is True), ``"0.5"`` for an int field
is an error, and an unknown key is an error naming the valid ones.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import typing
from dataclasses import dataclass
from pathlib import Path

from yolo_common.config import parse_value  # typed string -> field (bools parsed explicitly)


@dataclass
class Exp:
    """YOLOX-L-sized defaults (depth 1.0, width 1.0); the subclasses below set the other sizes."""

    # ---- model ---- #
    name: str = "yolox-l"
    num_classes: int = 80          # COCO; the synthetic smoke set has 3
    depth: float = 1.00            # multiplies the number of bottlenecks per CSP layer
    width: float = 1.00            # multiplies every channel count
    depthwise: bool = False        # DWConv instead of dense 3x3 (nano)
    act: str = "silu"              # silu | relu | lrelu (LeakyReLU 0.1), every BaseConv (Megvii's `act`)

    # ---- data ---- #
    data_num_workers: int = 4
    input_size: tuple[int, int] = (640, 640)   # (h, w) the loader produces; multiscale resizes on device
    # Multiscale: every 10 iterations a new side 32*k, k in [input/32 - range, input/32 + range]
    # (480..800 for 640). Each new shape costs a graph compilation on HPU: use --noresize there.
    multiscale_range: int = 5
    random_size: tuple[int, int] | None = None  # explicit (k_min, k_max) of 32*k; overrides the range
    train_split: str = "train2017"
    # Decode every image once before training and drop (count) the unreadable ones; costs a full
    # decode pass (minutes on COCO). Off: a bad image is still skipped and counted when it is loaded.
    verify_images: bool = False
    val_split: str = "val2017"
    max_labels: int = 120           # targets kept per training image, every epoch (Megvii's TrainTransform(120))

    # ---- augmentation ---- #
    mosaic_prob: float = 1.0
    mixup_prob: float = 1.0
    hsv_prob: float = 1.0
    flip_prob: float = 0.5
    degrees: float = 10.0           # rotation range (+-) of the mosaic's affine
    translate: float = 0.1          # translation range, fraction of the output side
    mosaic_scale: tuple[float, float] = (0.1, 2.0)
    enable_mixup: bool = True
    mixup_scale: tuple[float, float] = (0.5, 1.5)
    shear: float = 2.0              # degrees
    # Where the mosaic's rotation/scale pivots: "centre" (this project: about the 2h x 2w canvas centre,
    # which lands mid-output, so every scale shows the mosaic's middle) or "origin" (Megvii's
    # get_affine_matrix: about the canvas corner with +-translate, showing its top-left part).
    mosaic_affine: str = "centre"

    # ---- assignment ---- #
    # "0.3.0": in-box OR within 2.5 strides (YOLOX 0.3.0, Habana's port, the published AP table);
    # "head": within 1.5 strides only (Megvii's Jan 2023 change, reported +0.5 AP on YOLOX-S).
    simota_rule: str = "0.3.0"

    # ---- training schedule ---- #
    warmup_epochs: int = 5
    max_epoch: int = 300
    warmup_lr: float = 0.0
    min_lr_ratio: float = 0.05
    basic_lr_per_img: float = 0.01 / 64.0   # lr = this x global batch
    scheduler: str = "yoloxwarmcos"         # the only one implemented
    no_aug_epochs: int = 15         # no mosaic/mixup, L1 loss on, eval every epoch from epoch max-no_aug-1 (Megvii)
    ema: bool = True
    ema_decay: float = 0.9998
    weight_decay: float = 5e-4      # conv/linear weights only
    momentum: float = 0.9
    steps: int = 0                  # > 0: stop after this many iterations in total (seed's `steps 500`)
    freeze_bn: bool = False         # BN in eval mode while training (per-sample independent batches)
    # BN statistics over the whole global batch across ranks (N ranks then train like 1 process); costs
    # synchronous all-reduces per BN layer. Megvii has no SyncBN: off by default.
    sync_bn: bool = False

    # ---- logging / checkpoints ---- #
    print_interval: int = 10        # iterations between progress lines
    eval_interval: int = 10         # epochs between evaluations (1 in the no-aug epochs)
    save_history_ckpt: bool = True  # keep epoch_N.pt for every epoch
    # At the end: export the EMA model to <run>/export/<name>.onnx and score it with yolo_common's ONNX
    # evaluator on the val split (COCO layout), next to the torch evaluation in summary.md.
    export_onnx: bool = False
    output_dir: str = "runs"        # the run lands in <output_dir>/<experiment name>

    # ---- evaluation ---- #
    test_size: tuple[int, int] = (640, 640)
    test_conf: float = 0.01
    nmsthre: float = 0.65
    max_dets: int = 100             # per image, after NMS (COCO counts at most 100)

    def check(self) -> Exp:
        """Values that types alone cannot rule out; raises ``ValueError`` naming the key."""
        if self.act not in ("silu", "relu", "lrelu"):
            raise ValueError(f"config key 'act': expected silu|relu|lrelu, got {self.act!r}")
        if self.simota_rule not in ("0.3.0", "head"):
            raise ValueError(f"config key 'simota_rule': expected 0.3.0|head, got {self.simota_rule!r}")
        if self.mosaic_affine not in ("centre", "origin"):
            raise ValueError(f"config key 'mosaic_affine': expected centre|origin, got {self.mosaic_affine!r}")
        for key in ("input_size", "test_size"):
            if any(int(v) <= 0 or int(v) % 32 for v in getattr(self, key)):
                raise ValueError(f"config key {key!r}: (h, w) must be positive multiples of 32 (the largest "
                                 f"stride), got {getattr(self, key)}")
        return self

    def merge(self, opts: list[str]) -> Exp:
        """Applies ``key value`` pairs in place (type-checked; see the module docstring)."""
        if len(opts) % 2:
            raise ValueError(f"overrides must be `key value` pairs, got an odd list: {opts}")
        hints = typing.get_type_hints(type(self))
        names = {f.name for f in dataclasses.fields(self)}
        for key, raw in zip(opts[0::2], opts[1::2]):
            if key not in names:
                raise ValueError(f"unknown config key {key!r} for {type(self).__name__}; valid keys: "
                                 f"{', '.join(sorted(names))}")
            try:
                setattr(self, key, parse_value(raw, hints[key]))
            except ValueError as e:
                raise ValueError(f"config key {key!r}: {e}") from None
        return self.check()

    @property
    def no_aug_start_epoch(self) -> int:
        """First (0-based) epoch without mosaic/mixup: Megvii's ``before_epoch`` closes the mosaic when
        ``epoch + 1 == max_epoch - no_aug_epochs``, so ``no_aug_epochs 15`` gives 16 such epochs (and 0
        gives the last one). The LR schedule's flat tail stays ``no_aug_epochs`` long, as Megvii's."""
        return max(self.max_epoch - self.no_aug_epochs - 1, 0)


@dataclass
class YoloxNano(Exp):
    name: str = "yolox-nano"
    depth: float = 0.33
    width: float = 0.25
    depthwise: bool = True
    input_size: tuple[int, int] = (416, 416)
    test_size: tuple[int, int] = (416, 416)
    random_size: tuple[int, int] | None = (10, 20)
    mosaic_scale: tuple[float, float] = (0.5, 1.5)
    mosaic_prob: float = 0.5
    enable_mixup: bool = False


@dataclass
class YoloxTiny(Exp):
    name: str = "yolox-tiny"
    depth: float = 0.33
    width: float = 0.375
    input_size: tuple[int, int] = (416, 416)
    test_size: tuple[int, int] = (416, 416)
    random_size: tuple[int, int] | None = (10, 20)
    mosaic_scale: tuple[float, float] = (0.5, 1.5)
    enable_mixup: bool = False


@dataclass
class YoloxS(Exp):
    name: str = "yolox-s"
    depth: float = 0.33
    width: float = 0.50


@dataclass
class YoloxM(Exp):
    name: str = "yolox-m"
    depth: float = 0.67
    width: float = 0.75


@dataclass
class YoloxL(Exp):
    name: str = "yolox-l"


@dataclass
class YoloxX(Exp):
    name: str = "yolox-x"
    depth: float = 1.33
    width: float = 1.25


EXPS: dict[str, type[Exp]] = {
    "yolox-nano": YoloxNano, "yolox-tiny": YoloxTiny, "yolox-s": YoloxS,
    "yolox-m": YoloxM, "yolox-l": YoloxL, "yolox-x": YoloxX,
}


def get_exp(name: str) -> Exp:
    """A fresh config for ``yolox-nano|tiny|s|m|l|x`` (underscores accepted, as in Megvii's file names)."""
    key = name.strip().lower().replace("_", "-")
    if key not in EXPS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(EXPS)}")
    return EXPS[key]()


def load_exp_file(path: str | Path) -> Exp:
    """An experiment file, as Megvii's ``-f exps/my_exp.py``: a Python file defining ``class Exp`` that
    subclasses one of the configs here. Either style works::

        from dataclasses import dataclass
        from yolox_gaudi.config import YoloxS

        @dataclass
        class Exp(YoloxS):            # new defaults as fields
            num_classes: int = 20
            max_epoch: int = 100

        class Exp(YoloxS):            # Megvii's style: set attributes in __init__
            def __init__(self):
                super().__init__()
                self.num_classes = 20

    A Megvii file works after its import line becomes ``from yolox_gaudi.config import ...``. Only the
    config *values* are read: methods such as ``get_model`` or ``get_data_loader`` are not called (the
    model, data and loop are this project's), so a file that overrides them is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"experiment file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"yolox_exp_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ValueError(f"{path}: {type(e).__name__}: {e}") from e
    cls = getattr(module, "Exp", None)
    if not (isinstance(cls, type) and issubclass(cls, Exp)):
        raise ValueError(f"{path} must define `class Exp` subclassing yolox_gaudi.config.Exp (or YoloxS, ...)")
    overridden = [m for m in ("get_model", "get_data_loader", "get_dataset", "get_optimizer", "get_lr_scheduler",
                              "get_evaluator", "eval") if m in vars(cls)]
    if overridden:
        raise ValueError(f"{path}: Exp overrides {overridden}, which this project never calls (only config "
                         f"values are read); set fields instead")
    try:
        exp = cls()
        # `class Exp(YoloxS): act = "relu"` without @dataclass: the dataclass __init__ would set the
        # parent's default over the class attribute. Apply such class-level values unless __init__ (Megvii's
        # style) already set the field to something else.
        base_defaults = {f.name: getattr(exp, f.name) for f in dataclasses.fields(exp)}
        for klass in reversed([k for k in cls.__mro__ if issubclass(k, Exp) and "__dataclass_fields__" not in vars(k)]):
            for name, value in vars(klass).items():
                if name in base_defaults and not callable(value) and getattr(exp, name) == _field_default(exp, name):
                    setattr(exp, name, value)
        # Anything else the file sets (a typo, or Megvii's data_dir / train_ann / val_ann, which are
        # flags or split names here) would be silently unused: refuse it, as merge() refuses unknown keys.
        unknown = sorted(set(vars(exp)) - set(base_defaults))
        if unknown:
            hint = {"data_dir": "--data_dir", "train_ann": "train_split", "val_ann": "val_split"}
            raise ValueError(f"Exp sets {unknown}, which are not config keys"
                             f"{''.join(f'; for {k} use {hint[k]}' for k in unknown if k in hint)}; valid keys: "
                             f"{', '.join(sorted(base_defaults))}")
        return exp.check()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e


def _field_default(exp: Exp, name: str):
    f = next(f for f in dataclasses.fields(exp) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


# The fields that shape the network: a checkpoint's values win over the named model's when it is loaded
# for evaluation, demo or export (a model trained with `act relu` must not run with SiLU).
MODEL_FIELDS = ("num_classes", "depth", "width", "depthwise", "act")


def apply_checkpoint_exp(exp: Exp, ck: dict, *, extra: tuple[str, ...] = ()) -> list[str]:
    """Copies :data:`MODEL_FIELDS` (+ ``extra``) from a run checkpoint's ``exp`` dict into ``exp``;
    returns the fields that changed. A Megvii ``.pth`` (no ``exp``) changes nothing."""
    saved = ck.get("exp") if isinstance(ck, dict) else None
    if not isinstance(saved, dict):
        return []
    hints = typing.get_type_hints(type(exp))
    changed = []
    for name in (*MODEL_FIELDS, *extra):
        if name in saved:
            value = saved[name]
            if isinstance(value, list):
                value = tuple(value)
            if getattr(exp, name) != value:
                changed.append(name)
                setattr(exp, name, parse_value(str(value) if not isinstance(value, tuple) else
                                               ",".join(map(str, value)), hints[name]))
    return changed


def exp_to_dict(exp: Exp) -> dict:
    """Plain dict of the config (for config.json and checkpoints)."""
    return dataclasses.asdict(exp)


__all__ = ["EXPS", "Exp", "YoloxL", "YoloxM", "YoloxNano", "YoloxS", "YoloxTiny", "YoloxX", "exp_to_dict",
           "apply_checkpoint_exp", "get_exp", "load_exp_file", "parse_value"]
