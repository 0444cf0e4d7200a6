"""The one run configuration: every knob of both regimes, grouped, with the reason for each default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class TrainConfig:
    """YOLOS fine-tuning run (baseline AMP or progressive bf16 accumulation).

    Defaults follow the YOLOS paper's fine-tuning recipe (AdamW, lr 5e-5, wd 1e-4, clip 0.1) scaled to
    the HF object-detection example's single-GPU batch.
    """

    # ---- run ----
    regime: str = "baseline"                  # baseline | progressive
    output_dir: str = "runs/yolos"             # run root: config.json, logs/, tb/, curves/, checkpoints/
    seed: int = 42                             # seeds python/numpy/torch; recorded in config.json
    device: str = "auto"                       # auto | cpu | cuda[:N]
    num_threads: int | None = None             # torch CPU threads, set by the CLI (None: torch's default)
    resume: bool = False                       # continue <output_dir>/checkpoints/last.pt (epoch boundaries)

    # ---- model ----
    model: str = "hustvl/yolos-tiny"           # hub id or local dir, loaded with from_pretrained
    model_config: str | None = None            # "tiny-random": small random-init YOLOS (tests, smoke run)

    # ---- data ----
    dataset: str = "coco2017"                  # coco2017 | cppe5 | synthetic
    coco_dir: str | None = None                # COCO root: train2017/, val2017/, annotations/
    cppe5_path: str = "rishitdagli/cppe-5"     # local parquet file/dir or a hub dataset id (parquet)
    synthetic_dir: str | None = None           # where the synthetic set is generated (default: run root)
    synthetic_train: int = 32                  # synthetic images per split: seconds to generate
    synthetic_val: int = 8
    image_size: tuple[int, int] = (512, 512)   # fixed (h, w) resize, no padding: boxes stay exact for eval
    max_train_samples: int | None = None       # truncate the splits for quick runs
    max_eval_samples: int | None = None
    augment: bool = True                       # flip/colour/blur/perspective on train only
    num_workers: int = 2                       # dataloader workers (0 = main process)
    # Decode every COCO/synthetic image once before training and drop the unreadable ones (minutes on
    # COCO). Off: a bad image is still skipped and counted when a loader reads it.
    verify_images: bool = False

    # ---- optimisation ----
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    learning_rate: float = 5e-5                # YOLOS and the HF example; DETR-style models diverge at 1e-3
    weight_decay: float = 1e-4
    num_train_epochs: float = 1.0
    max_steps: int | None = None               # overrides epochs when set
    warmup_ratio: float = 0.05                 # linear warmup, then cosine to 0
    max_grad_norm: float = 0.1                 # YOLOS clips at 0.1
    precision: str = "bf16"                    # bf16 | fp16 | fp32 autocast (fp16 adds a GradScaler)

    # ---- bf16 accumulation (progressive regime) ----
    schedule: str = "attn@0.2,mlp@0.4,qkv@0.6,head@0.8"   # group@fraction of total steps
    ramp_mode: str = "blocks"                  # blocks: blocks_per_stage blocks at a time; all: at once
    blocks_per_stage: int = 2
    accum_chunk: int = 1                       # 1 = per-MAC (upstream's study); 16/32/64 = per K-block
    # Per-role chunk overrides, e.g. "pv=256,qk=64,mlp=32" (roles: qkv attn qk pv mlp head patch_embed;
    # PV reduces over the sequence, ~1-3k, QK^T over the head dim, 64)
    group_chunks: str | None = None
    accum_format: str = "bf16"                 # accumulator: bf16 | fp16 | e5m2 | e4m3fn | fp32 | e<E>m<M>
    rounding: str = "rne"                      # rne | rtz | sr (stochastic, seeded from `seed`)
    operand_format: str = "bf16"               # operands: bf16 | fp16 | e5m2 | e4m3fn (mantissa <= 11 bits)
    bias_placement: str = "epilogue"           # epilogue (one final rounding) | init (starts the running sum)
    kernel_backend: str = "auto"               # auto (Triton on CUDA, emulation elsewhere) | emulation | triton | triton-dot

    # ---- eval / logging ----
    eval_every_steps: int | None = None        # None: eval at the end of every epoch
    # At the end, also evaluate aspect-preserving (shortest edge 512, longest <= 864, as YOLOS reports its
    # AP), batch 1 since sizes differ; next to the fixed image_size resize the run trains and evaluates with
    eval_aspect: bool = False
    eval_shortest_edge: int = 512
    eval_longest_edge: int = 864
    # At the end: the float model -> <run>/export/yolos.onnx (set contract), scored by yolo_common's ONNX
    # evaluator on the eval split (COCO-layout datasets: coco2017, synthetic)
    export_onnx: bool = False
    log_every_steps: int = 10
    report_to: str | None = None               # "wandb" to mirror scalars (needs wandb installed)
    wandb_project: str | None = None
    wandb_run_name: str | None = None

    def __post_init__(self) -> None:
        if self.regime not in ("baseline", "progressive"):
            raise ValueError(f"regime must be 'baseline' or 'progressive', got {self.regime!r}")
        if self.dataset not in ("coco2017", "cppe5", "synthetic"):
            raise ValueError(f"dataset must be coco2017, cppe5 or synthetic, got {self.dataset!r}")
        if self.model_config not in (None, "tiny-random"):
            raise ValueError(f"model_config must be 'tiny-random' or unset, got {self.model_config!r}")
        if self.dataset == "coco2017" and not self.coco_dir:
            raise ValueError("--dataset coco2017 needs --coco_dir (train2017/, val2017/, annotations/)")
        if self.regime == "progressive":
            # Fail before any data or model is built (imported here: the schedule module loads torch).
            from yolos_bf16accum.schedule import parse_schedule
            from yolos_bf16accum.ste import check_backend

            parse_schedule(self.schedule)
            self.accum_specs()
            check_backend(self.kernel_backend)
            if self.ramp_mode not in ("blocks", "all"):
                raise ValueError(f"ramp_mode must be 'blocks' or 'all', got {self.ramp_mode!r}")
            if self.blocks_per_stage < 1:
                raise ValueError(f"blocks_per_stage must be >= 1, got {self.blocks_per_stage}")
        self.image_size = tuple(int(v) for v in self.image_size)
        if len(self.image_size) != 2 or min(self.image_size) < 16:
            raise ValueError(f"image_size must be (h, w) with sides >= 16, got {self.image_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def accum_specs(self) -> dict:
        """``{role: AccumSpec}`` for :func:`yolos_bf16accum.patching.apply_patch_state` (validates)."""
        from yolos_bf16accum.patching import SPEC_KEYS, resolve_specs
        from yolos_bf16accum.spec import AccumSpec

        base = AccumSpec(chunk=self.accum_chunk, acc=self.accum_format, rounding=self.rounding,
                         operands=self.operand_format, bias=self.bias_placement, seed=self.seed)
        specs = {"default": base}
        for item in (self.group_chunks or "").split(","):
            if not item.strip():
                continue
            role, sep, chunk = item.partition("=")
            role = role.strip()
            if not sep or role not in SPEC_KEYS[1:] or not chunk.strip().isdigit():
                raise ValueError(f"bad group_chunks item {item!r}: expected role=chunk with role in "
                                 f"{', '.join(SPEC_KEYS[1:])}, e.g. pv=256")
            specs[role] = base.replace(chunk=int(chunk))
        return resolve_specs(specs)


def smoke_config(regime: str = "baseline", output_dir: str = "runs/smoke", **overrides) -> TrainConfig:
    """The CPU smoke run: tiny random YOLOS on the synthetic set, ~100 steps, well under a minute a regime.

    fp32 (no autocast) and one CPU thread keep it fast on a busy 2-core box (OpenMP barriers on an
    oversubscribed machine made tiny ops ~100x slower). Per-MAC accumulation (chunk 1, upstream's setting)
    costs the emulation no more than chunk 16: both walk K one product at a time. The point is that
    every stage runs (data, both regimes, the full ramp, eval, logs, checkpoints), not a meaningful AP.
    """
    base = dict(regime=regime, output_dir=output_dir, model_config="tiny-random", dataset="synthetic",
                image_size=(64, 96), synthetic_train=32, synthetic_val=16, per_device_train_batch_size=4,
                per_device_eval_batch_size=8, num_train_epochs=10, learning_rate=1e-3, warmup_ratio=0.1,
                max_grad_norm=1.0, precision="fp32", num_workers=0, device="cpu", accum_chunk=1,
                log_every_steps=8, num_threads=1, export_onnx=True)
    base.update(overrides)
    return TrainConfig(**base)
