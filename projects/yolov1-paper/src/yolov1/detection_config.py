"""Detection config: the paper's YOLOv1 on Pascal VOC (paper §2.2), every default the paper's.

Every field can be overridden on the command line, ``key=value``:

    accelerate launch -m yolov1.detection_train backbone=runs/pretrain/<run>/checkpoints/epoch_0059/backbone.safetensors

Data: the paper trains on VOC 2007 trainval + 2012 trainval (16,551 images) and reports 63.4 mAP on
VOC 2007 test (11-point AP, difficult ignored). For VOC 2012 only, use
``train_split=2012:train val_split=2012:val``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DetectionConfig:
    # ---- data ---- #
    data_root: str = "data"  # the folder holding VOCdevkit/VOC2007, VOCdevkit/VOC2012
    train_split: str = "2007:trainval,2012:trainval"  # YEAR:IMAGE_SET parts from ImageSets/Main, concatenated
    val_split: str = "2007:test"  # what voc07_mAP is reported on
    class_names: tuple[str, ...] = ()  # () = VOC's 20 classes (or the class_names.txt a synthetic set carries)
    use_difficult: bool = False  # train on "difficult" objects too (Darknet drops them; eval always ignores them)
    verify_images: bool = True  # decode every image once and skip/count bad ones (~1 min)
    num_workers: int = 8

    # ---- augmentation (paper: up to 20% scale/translation, up to 1.5x exposure/saturation in HSV) ---- #
    aug_scale: float = 0.2
    aug_translate: float = 0.2
    aug_saturation: float = 1.5
    aug_exposure: float = 1.5
    hflip: bool = False  # not in the paper

    # ---- model ---- #
    S: int = 7  # grid; the input is 64 * S pixels (448)
    B: int = 2  # boxes per cell
    width: float = 1.0  # channel multiplier (1.0 = paper)
    hidden: int = 4096  # first FC layer (4096 = paper)
    dropout: float = 0.5
    batch_norm: bool = False  # not in the paper; must match the pretrained backbone
    backbone: str = ""  # backbone.safetensors from yolov1.extract_backbone ("" = random init, not the paper)

    # ---- loss ---- #
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5
    rescore: bool = True  # confidence target = IoU of the responsible box (False: 1)
    # All-zero IoUs (every object at initialisation): "darknet" = the smallest-RMSE predictor is responsible
    # (the authors' code); "iou" = the first one, which starves predictor 1 for the whole run (see loss.py).
    responsibility: str = "darknet"

    # ---- optimisation: warm-up 1e-3 -> 1e-2, then 1e-2 / 1e-3 / 1e-4 for 75 / 30 / 30 epochs ---- #
    epochs: int = 135
    batch_size: int = 64  # per process
    optimizer: str = "sgd"  # sgd (paper) | adamw (the smoke's small-data recipe; momentum = beta1)
    lr: float = 1e-2
    warmup_epochs: float = 1.0  # "for the first epochs we slowly raise the learning rate"
    warmup_start: float = 1e-3
    lr_milestones: tuple[float, ...] = (75.0, 105.0)
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4  # on conv/FC weights only
    grad_clip_norm: float = 0.0  # 0 = off; the starting code divided the LR by 5-7 instead (a hack)
    mixed_precision: str = "no"

    # ---- evaluation ---- #
    conf_threshold: float = 0.005  # low on purpose: AP integrates over all thresholds
    nms_iou: float = 0.5
    max_detections: int = 100  # per image, after NMS
    eval_every: int = 5  # epochs between VOC/COCO evaluations (and always after the last)

    # ---- run ---- #
    output_dir: str = "runs/detect"
    run_name: str = ""
    seed: int = 0
    keep_checkpoints: int = 2
    resume_from: str = ""
    max_train_batches: int = 0
    log_every: int = 20
    cpu: bool = False
    wandb: bool = False
    wandb_project: str = "yolov1-detect"
    wandb_mode: str = "offline"

    @property
    def image_size(self) -> int:
        return 64 * self.S

    def validate(self) -> None:
        """Raises ValueError on values that cannot work (called after overrides)."""
        if self.S < 1 or self.B < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"need S, B, epochs, batch_size >= 1: {self}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.responsibility not in ("darknet", "iou"):
            raise ValueError(f"responsibility must be darknet or iou, got {self.responsibility!r}")
