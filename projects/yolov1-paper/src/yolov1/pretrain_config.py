"""Backbone pretraining config: the first 20 convs + avgpool + FC on ImageNet-100 at 224 (paper §2.2).

Every field can be overridden on the command line, ``key=value``:

    accelerate launch -m yolov1.pretrain_train data_root=data/imagenet100 epochs=60 batch_size=128

The paper pretrains on ImageNet-1k for about a week (88% top-5) and gives no schedule; the defaults
below are a plain SGD step schedule that trains the BN-free network stably at batch 64. ImageNet-100
is much smaller (~126k images): expect a weaker backbone than the paper's (the starting code's author
found it "much worse") and say so next to any detection number it leads to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PretrainConfig:
    # ---- data ---- #
    data_root: str = "data/imagenet100"  # holds Labels.json, train.X1..4/, val.X/ (scripts/download_imagenet_100.bash)
    image_size: int = 224  # the paper pretrains at half the detection resolution
    verify_images: bool = True  # decode every image once and skip/count bad ones (~2 min on 8 threads)
    num_workers: int = 8  # data loader processes per GPU; JPEG decoding is the bottleneck

    # ---- model ---- #
    width: float = 1.0  # channel multiplier; 1.0 = the paper's convs (smoke tests use 0.125)
    batch_norm: bool = False  # not in the paper; must match the detection config to load the backbone

    # ---- optimisation ---- #
    epochs: int = 60
    batch_size: int = 64  # per process; the effective batch is batch_size * num_processes
    lr: float = 0.01  # peak LR; 0.1 (the usual ResNet value) diverges without BN
    warmup_epochs: float = 1.0  # linear warm-up from warmup_start to lr (per iteration)
    warmup_start: float = 1e-3
    lr_milestones: tuple[float, ...] = (30.0, 45.0)  # epochs where the LR is multiplied by lr_gamma
    lr_gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4  # the paper's decay, on conv/FC weights only (not biases or BN)
    grad_clip_norm: float = 0.0  # 0 = off (the paper clips nothing); the fix to try before lowering lr
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16": accelerate's autocast (GPU only in practice)

    # ---- evaluation ---- #
    eval_every: int = 1  # epochs between top-1/top-5 evaluations (and always after the last)

    # ---- run ---- #
    output_dir: str = "runs/pretrain"  # the run root is output_dir/run_name
    run_name: str = ""  # "" = a timestamp
    seed: int = 0  # recorded in config.json; same seed + same data = same run (up to GPU nondeterminism)
    keep_checkpoints: int = 2  # epoch checkpoints kept (older ones deleted); each is model + optimizer
    resume_from: str = ""  # a checkpoint dir (…/checkpoints/epoch_0007) to continue from
    max_train_batches: int = 0  # >0: stop each epoch early (smoke tests)
    log_every: int = 20  # iterations between train log lines
    cpu: bool = False  # force the CPU even when a GPU is visible
    wandb: bool = False  # mirror the logs to Weights & Biases (pip install yolov1-paper[wandb])
    wandb_project: str = "yolov1-pretrain"
    wandb_mode: str = "offline"  # "online" to upload; offline needs no network or login

    def validate(self) -> None:
        """Raises ValueError on values that cannot work (called after overrides)."""
        if self.epochs < 1 or self.batch_size < 1 or self.image_size < 32:
            raise ValueError(f"need epochs >= 1, batch_size >= 1, image_size >= 32: {self}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
