"""Central config: ``YOLOConfig`` (every key, its type and its default, grouped) and ``get_config``.

Merge order (highest first), as the seed defines it::

    hyp dict (``--hypo``)  >  hyp file path (``--hyp``)  >  cfg['hyp'] (e.g. a checkpoint's)  >  defaults

Every value is checked against its default's type; an unknown key or a bad value stops with a message
naming the key and the closest known keys. Nested keys use dots on the command line (``dino.enabled:true``).
Hyp files may write the optimizer the seed's way, as a block keyed by its name::

    optimizer:
      SGD: {lr0: 0.01, momentum: 0.937, decoupled_lr: {backbone: {lr_scale: 1.0}, head: {lr_scale: 1.0}}}

which normalises to ``optimizer: SGD, lr0: 0.01, momentum: 0.937, backbone_lr_scale: 1.0, ...``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yolo_common.config import parse_value

# String keys with a closed set of values (checked; the error lists them).
CHOICES = {
    "model": ("hyper",),
    "model_scale": ("n", "s", "m", "l", "x", "t"),
    "hyper_distance": ("euclidean", "normalized"),
    "optimizer": ("SGD", "Lion"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "iou_type": ("ciou", "giou", "diou", "iou"),
    "assign_mode": ("tal", "simota"),
    "cache": ("none", "ram", "disk", "hybrid"),
    "cache_compression": ("none", "lz4", "zstd"),
    "dino.quant": ("auto", "int4", "int8", "fp16", "bf16", "fp32"),
}


@dataclass
class DinoConfig:
    """DINOv3 teacher distillation (``utils/dino_teacher``, ``utils/distill``, ``utils/loss``); every part is off
    unless its switch is on. The seed's ``low.yaml`` block sets the first group as written."""

    # ---- the teacher ----
    enabled: bool = False
    model_name: str = "facebook/dinov3-vitb16-pretrain-lvd1689m"  # HF id, a local folder, or tiny-random (tests)
    hf_token: str | None = None      # else $HF_TOKEN; the facebook/dinov3-* repos are gated
    quant: str = "auto"              # int4|int8 (torchao weight-only), fp16|bf16|fp32; auto: bf16/fp16 CUDA, fp32 CPU
    resolution: int = 512            # teacher input side (multiple of 16); 640 gives the student's /16 grid at 640
    every_n: int = 1                 # run the teacher every n steps; between, reuse only for the very same images
    max_epochs: int = 12             # unload the teacher (and stop every DINO term) after this many epochs
    prewarm: bool = False            # build and run the teacher once before the first step
    # ---- assignment and box weights ----
    objfor02: bool = False           # saliency prior in the assignment cost (SimOTA and TAL), no loss term
    objfor02_weight: float = 1.0     # cost += weight * (1 - saliency at the anchor)
    reg_weight_with_saliency: bool = False  # IoU/DFL weight per positive = max(floor, saliency^power), mean 1
    reg_weight_floor: float = 0.2
    reg_weight_power: float = 2.0
    centroid_align: bool = False     # pull predicted centres to the saliency centroid in the GT box (early epochs)
    centroid_weight: float = 0.1
    centroid_max_epochs: int = 6
    # ---- extra signals ----
    cls_proto: bool = False          # prototype-based soft class targets mixed into the BCE targets
    cls_proto_weight: float = 0.3    # mix: t = (1 - w) t + w * quality * soft
    cls_proto_temp: float = 0.1      # softmax temperature over cosine similarities
    cls_proto_momentum: float = 0.99  # running mean of the prototypes
    contrast: bool = False           # region contrastive term (InfoNCE, student GT-box features vs the teacher's)
    contrast_weight: float = 0.1
    contrast_temp: float = 0.1
    feat_distill: bool = False       # stride-16 feature distillation (1x1 projection, cosine loss)
    feat_weight: float = 1.0
    # ---- backbone LR gate ----
    bb_lr_gate: bool = False         # backbone LR x max(bb_lr_gate_min, 1 - share), share = EMA of DINO/total loss
    bb_lr_gate_min: float = 0.5

    def __getitem__(self, key: str) -> Any:   # cfg["dino"]["objfor02"], like a dict
        return getattr(self, key)


@dataclass
class YOLOConfig:
    """Every knob of a run, with its default. Access as attributes or ``cfg['key']``."""

    # ---- model core ----
    model: str = "hyper"                  # model family (``--model``)
    model_scale: str = "n"                # n s m l x (hyper-yolo.yaml) or t (hyper-yolot.yaml); ``--scale``
    nc: int | None = None                 # classes; None: from the dataset
    reg_max: int = 16                     # DFL bins per side
    strides: tuple[int, int, int] = (8, 16, 32)  # expected; attach_runtime infers and checks them
    detect_bias_prior: float | None = None  # class-logit prior p; None: YOLOv8's log(5/nc/(640/s)^2)
    decode_centered: bool = True          # anchors at cell centres (grid + 0.5), as YOLOv8
    dfl_tau: float = 1.0                  # softmax temperature of the DFL decode (1 = published)
    hyper_threshold: float | None = None  # HCM epsilon-ball radius; None: scale default 6/8/10/10/12 (t: 6)
    hyper_distance: str = "euclidean"     # euclidean (published) | normalized (distance / sqrt(C))

    # ---- data ----
    imgsz: int = 640                      # training / validation side (``--img-size``)
    batch_size: int = 16                  # per process (``--batch-size``)
    workers: int = 4                      # DataLoader workers per process (``--workers``)
    letterbox_center: bool = True         # centred padding (ultralytics); False: top-left (YOLOX)
    pad_value: int = 114                  # letterbox / mosaic border grey
    shuffle: bool = True
    persistent_workers: bool = True       # keep workers between epochs (the dataset reads its epoch from
                                          # shared memory, so augmentation schedules still advance)
    prefetch_factor: int = 2              # batches each worker prepares ahead
    cache: str = "none"                   # none | ram (decoded, resized uint8) | disk (one file per image) | hybrid
    cache_compression: str = "none"       # none | lz4 | zstd: disk/hybrid files; with ram, the RAM holds the
                                          # compressed bytes (validator's --ram-compress; ~2-4x less RAM,
                                          # one decompress per sample)
    verify_images: bool = False           # decode every image once before training (drops unreadable ones)
    cuda_prefetch: bool = False           # copy batches to the GPU on a side stream, buffer_depth ahead
                                          # (utils/prefetch.py; costs buffer_depth batches of GPU memory)
    buffer_depth: int = 2                 # batches the prefetcher keeps in flight
    gpu_collate: bool = False             # workers ship unpadded uint8 images; letterbox, affine, flips, HSV
                                          # and /255 run on the device on whole batches (utils/device_collate.py)

    # ---- optimisation ----
    epochs: int = 100
    optimizer: str = "SGD"                # SGD (nesterov) | Lion
    lr0: float = 0.01                     # base LR (Lion: use 3-10x less)
    lrf: float = 0.01                     # final LR = lr0 * lrf (cosine)
    momentum: float = 0.937               # SGD momentum / Lion beta1
    lion_beta2: float = 0.99
    nesterov: bool = True
    weight_decay: float = 0.0005          # conv/linear weights only (no decay on BN and biases)
    nbs: int = 64                         # nominal batch: weight decay scales with batch/nbs, grads accumulate to it
    warmup_epochs: float = 3.0            # linear warm-up length ...
    warmup_min_iters: int = 100           # ... but at least this many iterations (ultralytics' rule)
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1           # bias LR starts here and falls to the schedule
    backbone_lr_scale: float = 1.0        # decoupled LR: backbone groups (layers 0-9)
    head_lr_scale: float = 1.0            # decoupled LR: neck + Detect
    use_ema: bool = True
    ema_decay: float = 0.9999             # EMA decay; ramped in as decay * (1 - exp(-updates / ema_tau))
    ema_tau: float = 2000.0
    grad_clip: float = 10.0               # max grad norm; 0 disables
    precision: str = "auto"               # auto: bf16 on CUDA if supported (else fp16), fp32 on CPU
    seed: int = 0
    close_mosaic: int = 10                # last epochs without mosaic/mixup/copy_paste

    # ---- augment ----
    augment: bool = True
    mosaic: float = 1.0                   # probability of a 4-image mosaic
    mixup: float = 0.0                    # probability of blending in a second (mosaic) sample
    copy_paste: float = 0.0               # probability of pasting boxes from another image
    copy_paste_max_overlap: float = 0.3   # a pasted box may cover at most this fraction of an existing one
    degrees: float = 0.0                  # rotation +- degrees
    translate: float = 0.1                # translation +- fraction of the side
    scale: float = 0.5                    # zoom in [1 - scale, 1 + scale]
    shear: float = 0.0                    # shear +- degrees
    perspective: float = 0.0              # perspective coefficient (0.0005 is a lot)
    fliplr: float = 0.5
    flipud: float = 0.0
    hsv_h: float = 0.015                  # hue gain (fraction of the circle)
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    min_visible_frac: float = 0.25        # drop a box when less than this fraction of its area stays visible
    min_box_size: float = 2.0             # drop boxes narrower or lower than this (pixels)
    smart_crop: bool = True               # mosaic/affine: redraw (up to smart_crop_tries) when every box would be lost
    smart_crop_tries: int = 5

    # ---- loss / IoU ----
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    iou_type: str = "ciou"
    assign_mode: str = "tal"              # tal (topk/alpha/beta) | simota (radius/lambda/topq)
    tal_topk: int = 10
    tal_alpha: float = 0.5
    tal_beta: float = 6.0
    assign_radius: float = 1.5            # simota: candidates within radius * stride of the GT centre
    assign_lambda_iou: float = 3.0        # simota: weight of -log(IoU) in the cost
    assign_topq: int = 10                 # simota: top-q IoUs summed for dynamic k
    l1: float = 0.0                       # optional L1 on normalised ltrb (0 = off)
    l1_gate_iou: float = 0.0              # only positives whose IoU >= this get the L1 term
    l1_ramp_epochs: int = 0               # L1 gain ramps linearly from 0 over this many epochs
    min_stride_box_alpha: float = 0.0     # up-weight small boxes: w *= 1 + alpha * max(0, 1 - sqrt(area)/(4*stride_min))

    # ---- postprocess ----
    conf_thresh: float = 0.001            # validation; detect uses detect_conf
    detect_conf: float = 0.25
    iou_thresh: float = 0.7
    pre_topk: int = 30000                 # candidates per image into NMS
    post_topk: int = 300                  # detections kept per image
    class_agnostic: bool = False
    nms_free: bool = False                # skip NMS: top-k by score only
    multi_label: bool = True              # validation: every class above conf_thresh is a candidate
                                          # (ultralytics' validator, yolo_common.onnx_eval); detect: best class

    # ---- logging ----
    val_interval: int = 1                 # epochs between validations (the last epoch always validates)

    dino: DinoConfig = field(default_factory=DinoConfig)

    def __getitem__(self, key: str) -> Any:
        return get_key(self, key)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type (the message names the key)."""


def _fields(obj) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def all_keys(cfg: YOLOConfig | None = None) -> list[str]:
    """Every key in dotted form (``dino.enabled``)."""
    cfg = cfg or YOLOConfig()
    keys = []
    for name, value in dataclasses.asdict(cfg).items():
        keys.extend(f"{name}.{k}" for k in value) if isinstance(value, dict) else keys.append(name)
    return keys


def get_key(cfg: YOLOConfig, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, all_keys(), n=3, cutoff=0.5)
    hint = f"; closest known keys: {', '.join(close)}" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _check(key: str, value: Any, tp: Any) -> Any:
    """``value`` (a string from the CLI, or a YAML scalar/list) as a value of type ``tp``."""
    try:
        if isinstance(value, str):
            out = parse_value(value, tp)
        else:
            out = _coerce(value, tp)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"bad value for {key!r}: {e}") from None
    if key in CHOICES and out not in CHOICES[key]:
        raise ConfigError(f"bad value for {key!r}: {out!r}; choose one of {', '.join(CHOICES[key])}")
    return out


def _coerce(value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if value is None:
            return None
        options = [a for a in args if a is not type(None)]
        return _coerce(value, options[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or (args[-1] is not Ellipsis and len(value) != len(args)):
            raise ValueError(f"expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, args[0] if args[-1] is Ellipsis else t) for v, t in zip(value, args))
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported type {tp!r}")


def flatten_hyp(hyp: dict, prefix: str = "") -> dict[str, Any]:
    """A (nested) hyp mapping -> ``{dotted key: value}``; normalises the seed's optimizer block."""
    flat: dict[str, Any] = {}
    for key, value in hyp.items():
        key = str(key)
        if not prefix and key == "optimizer" and isinstance(value, dict):
            flat.update(_flatten_optimizer(value))
        elif key == "dino" and isinstance(value, dict) and not prefix:
            flat.update(flatten_hyp(value, "dino."))
        else:
            flat[prefix + key] = value
    return flat


def _flatten_optimizer(block: dict) -> dict[str, Any]:
    names = [k for k in block if k in CHOICES["optimizer"]]
    other = [k for k in block if k not in CHOICES["optimizer"]]
    if len(names) != 1 or other:
        raise ConfigError(f"the 'optimizer' block must hold exactly one of {', '.join(CHOICES['optimizer'])} "
                          f"(got {', '.join(map(str, block)) or 'nothing'})")
    name = names[0]
    flat: dict[str, Any] = {"optimizer": name}
    for key, value in (block[name] or {}).items():
        if key == "decoupled_lr":
            for part in ("backbone", "head"):
                if part in (value or {}):
                    flat[f"{part}_lr_scale"] = value[part].get("lr_scale", 1.0)
            extra = set(value or {}) - {"backbone", "head"}
            if extra:
                raise ConfigError(f"unknown optimizer.{name}.decoupled_lr part(s) {sorted(extra)}; use backbone, head")
        elif key == "betas":  # Lion's (beta1, beta2)
            flat["momentum"], flat["lion_beta2"] = value
        else:
            flat[key] = value
    return flat


def parse_hypo(text: str) -> dict[str, Any]:
    """``--hypo``: ``"k:v,k:v"`` (dotted keys; brackets group commas: ``strides:[8,16,32]``) or a YAML path."""
    text = text.strip()
    if not text:
        return {}
    path = Path(text)
    if text.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise FileNotFoundError(f"--hypo file {path} does not exist")
        return flatten_hyp(load_yaml(path))
    pairs, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[(" and 1 or 0
        depth -= ch in "])" and 1 or 0
        if ch == "," and depth == 0:
            pairs.append(cur)
            cur = ""
        else:
            cur += ch
    pairs.append(cur)
    out: dict[str, Any] = {}
    for pair in pairs:
        if ":" not in pair:
            raise ConfigError(f"--hypo entry {pair.strip()!r} is not key:value")
        key, value = pair.split(":", 1)
        out[key.strip()] = value.strip()
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hyp file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a readable YAML file ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a hyp file must be a mapping of keys, got {type(data).__name__}")
    return data


def apply(cfg: YOLOConfig, flat: dict[str, Any], source: str = "") -> YOLOConfig:
    """Sets dotted keys on ``cfg`` (type-checked) and returns it."""
    for key, value in flat.items():
        parts = key.split(".")
        obj = cfg
        for part in parts[:-1]:
            if not dataclasses.is_dataclass(obj) or part not in _fields(obj):
                raise _unknown(key)
            obj = getattr(obj, part)
        fields = _fields(obj) if dataclasses.is_dataclass(obj) else {}
        name = parts[-1]
        if name not in fields or dataclasses.is_dataclass(getattr(obj, name)):
            raise _unknown(key)
        try:
            # get_type_hints: `from __future__ import annotations` leaves the field types as strings
            setattr(obj, name, _check(key, value, typing.get_type_hints(type(obj))[name]))
        except ConfigError as e:
            raise ConfigError(f"{e}{f' (from {source})' if source else ''}") from None
    return cfg


def get_config(cfg: dict | None = None, hyp: dict | None = None, hyp_path: str | Path | None = None) -> YOLOConfig:
    """Defaults < ``cfg['hyp']`` < the hyp file < ``hyp`` (see the module docstring).

    ``cfg`` is a run/checkpoint config mapping; only its ``hyp`` entry (a nested or flat mapping) is read.
    ``hyp`` is a flat or nested mapping (``--hypo`` parsed by ``parse_hypo``).
    """
    out = YOLOConfig()
    if cfg and cfg.get("hyp"):
        apply(out, flatten_hyp(cfg["hyp"]), "cfg['hyp']")
    if hyp_path is not None:
        apply(out, flatten_hyp(load_yaml(hyp_path)), str(hyp_path))
    if hyp:
        apply(out, flatten_hyp(hyp), "--hypo")
    validate(out)
    return out


def validate(cfg: YOLOConfig) -> None:
    """Cross-key checks, and keys whose feature has not landed yet (never silently ignored)."""
    d = cfg.dino
    if d.resolution <= 0 or d.resolution % 16:
        raise ConfigError(f"dino.resolution must be a positive multiple of 16 (the ViT patch), got {d.resolution}")
    if d.every_n < 1:
        raise ConfigError(f"dino.every_n must be >= 1, got {d.every_n}")
    if not 0.0 <= d.bb_lr_gate_min <= 1.0 or not 0.0 <= d.cls_proto_weight <= 1.0:
        raise ConfigError("dino.bb_lr_gate_min and dino.cls_proto_weight must be in [0, 1]")
    if cfg.buffer_depth < 1:
        raise ConfigError(f"buffer_depth must be >= 1, got {cfg.buffer_depth}")
    if cfg.imgsz % 32:
        raise ConfigError(f"imgsz must be a multiple of 32 (the largest stride), got {cfg.imgsz}")
    if cfg.cache_compression != "none" and cfg.cache == "none":
        raise ConfigError(f"cache_compression {cfg.cache_compression!r} needs a cache (ram, disk or hybrid)")
    for key in ("mosaic", "mixup", "copy_paste", "fliplr", "flipud"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise ConfigError(f"{key} is a probability in [0, 1], got {getattr(cfg, key)}")
