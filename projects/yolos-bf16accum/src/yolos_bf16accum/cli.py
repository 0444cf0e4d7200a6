"""Command line for both regimes (the two ``train_yolos_*.py`` scripts are thin wrappers over ``main``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from yolos_bf16accum.config import TrainConfig, smoke_config


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        vals = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --image_size {text!r}: expected N or H,W") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2:
        raise argparse.ArgumentTypeError(f"bad --image_size {text!r}: expected N or H,W")
    return vals[0], vals[1]


def get_args_parser(regime: str) -> argparse.ArgumentParser:
    """The seed's flags plus ``--model``, ``--model_config``, ``--accum_chunk`` and a few run knobs."""
    d = TrainConfig(regime=regime, dataset="synthetic")
    p = argparse.ArgumentParser(description=f"YOLOS fine-tuning, {regime} regime", allow_abbrev=False)
    p.add_argument("--output_dir", default=None, help="run root (default runs/<regime>)")
    p.add_argument("--dataset", choices=["coco2017", "cppe5", "synthetic"], default="coco2017")
    p.add_argument("--coco_dir", default=None, help="COCO root with train2017/, val2017/, annotations/")
    p.add_argument("--cppe5_path", default=d.cppe5_path, help="local CPPE-5 parquet file/dir or hub id")
    p.add_argument("--model", default=d.model, help="hub id or local from_pretrained dir")
    p.add_argument("--model_config", choices=["tiny-random"], default=None,
                   help="build a small random-init YOLOS instead of loading --model")
    p.add_argument("--per_device_train_batch_size", type=int, default=d.per_device_train_batch_size)
    p.add_argument("--per_device_eval_batch_size", type=int, default=d.per_device_eval_batch_size)
    p.add_argument("--learning_rate", type=float, default=d.learning_rate)
    p.add_argument("--weight_decay", type=float, default=d.weight_decay)
    p.add_argument("--num_train_epochs", type=float, default=d.num_train_epochs)
    p.add_argument("--max_steps", type=int, default=None)
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default=d.precision)
    p.add_argument("--max_train_samples", type=int, default=None)
    p.add_argument("--max_eval_samples", type=int, default=None)
    p.add_argument("--image_size", type=_size, default=d.image_size, help="fixed resize, N or H,W")
    p.add_argument("--eval_every_steps", type=int, default=None)
    p.add_argument("--export_onnx", action="store_true", default=None,
                   help="at the end: export the float model to ONNX and score it with yolo_common.onnx_eval")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--num_workers", type=int, default=d.num_workers)
    p.add_argument("--no_augment", action="store_true", help="disable train augmentations")
    p.add_argument("--verify_images", action="store_true",
                   help="decode every image once first and drop unreadable ones (COCO/synthetic; minutes on COCO)")
    p.add_argument("--schedule", default=d.schedule, help="group@fraction list (progressive regime)")
    p.add_argument("--ramp_mode", choices=["blocks", "all"], default=d.ramp_mode)
    p.add_argument("--blocks_per_stage", type=int, default=d.blocks_per_stage)
    p.add_argument("--accum_chunk", type=int, default=d.accum_chunk,
                   help="1 = round the running sum to bf16 after every product; 16/32/64 = after every K-block")
    p.add_argument("--group_chunks", default=None,
                   help="per-role chunk overrides, e.g. 'pv=256,mlp=32' (roles: qkv attn qk pv mlp head patch_embed)")
    p.add_argument("--accum_format", default=d.accum_format,
                   help="accumulator format: bf16 | fp16 | e5m2 | e4m3fn | fp32 | e<E>m<M> (e.g. e6m7)")
    p.add_argument("--rounding", choices=["rne", "rtz", "sr"], default=d.rounding,
                   help="accumulator rounding: nearest-even, toward zero, stochastic (seeded by --seed)")
    p.add_argument("--operand_format", default=d.operand_format, help="operand format: bf16 | fp16 | e5m2 | e4m3fn")
    p.add_argument("--bias_placement", choices=["epilogue", "init"], default=d.bias_placement,
                   help="a Linear's bias: added at the end (epilogue) or as the running sum's start (init)")
    p.add_argument("--kernel_backend", choices=["auto", "emulation", "triton", "triton-dot"], default=d.kernel_backend)
    p.add_argument("--report_to", choices=["none", "wandb"], default="none")
    p.add_argument("--wandb_project", default=None)
    p.add_argument("--wandb_run_name", default=None)
    p.add_argument("--eval_aspect", action="store_true",
                   help="at the end, also evaluate aspect-preserving (--eval_shortest_edge/--eval_longest_edge, batch 1)")
    p.add_argument("--eval_shortest_edge", type=int, default=d.eval_shortest_edge)
    p.add_argument("--eval_longest_edge", type=int, default=d.eval_longest_edge)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output_dir from checkpoints/last.pt (the same settings)")
    p.add_argument("--eval_only", action="store_true",
                   help="no training: the eval-only ablation (each --ablate group patched in turn, then all)")
    p.add_argument("--ablate", default="attn,mlp,qkv,head,patch_embed", help="groups for --eval_only")
    p.add_argument("--ablate_seeds", type=int, default=1,
                   help="repeat each patched configuration with N stochastic-rounding seeds (--rounding sr)")
    p.add_argument("--init_checkpoint", default=None,
                   help="weights for --eval_only: a run's checkpoints/{best,last}.pt (else --model's own)")
    p.add_argument("--smoke", action="store_true",
                   help="CPU smoke preset: tiny-random model on the synthetic set (other flags still apply)")
    return p


def config_from_args(args: argparse.Namespace, regime: str, argv: Sequence[str]) -> TrainConfig:
    """Builds the config; with ``--smoke`` only the flags given explicitly override the preset."""
    keys = ("output_dir", "dataset", "coco_dir", "cppe5_path", "model", "model_config",
            "per_device_train_batch_size", "per_device_eval_batch_size", "learning_rate", "weight_decay",
            "num_train_epochs", "max_steps", "precision", "max_train_samples", "max_eval_samples",
            "image_size", "eval_every_steps", "eval_shortest_edge", "eval_longest_edge", "seed", "device", "num_threads", "num_workers", "schedule", "ramp_mode",
            "blocks_per_stage", "accum_chunk", "group_chunks", "accum_format", "rounding", "operand_format",
            "bias_placement", "kernel_backend", "wandb_project", "wandb_run_name")
    values = {k: getattr(args, k) for k in keys}
    values["augment"] = not args.no_augment
    values["verify_images"] = args.verify_images
    values["resume"] = args.resume
    values["eval_aspect"] = args.eval_aspect
    if args.export_onnx:
        values["export_onnx"] = True
    values["report_to"] = None if args.report_to == "none" else args.report_to
    if values["output_dir"] is None:
        values["output_dir"] = f"runs/{'smoke-' if args.smoke else ''}{regime}"
    if args.smoke:
        given = {a.split("=")[0].lstrip("-") for a in argv if a.startswith("--")}
        overrides = {k: v for k, v in values.items() if k in given or k == "output_dir"}
        if "no_augment" in given:
            overrides["augment"] = False
        if "verify_images" in given:
            overrides["verify_images"] = True
        if "resume" in given:
            overrides["resume"] = True
        if "eval_aspect" in given:
            overrides["eval_aspect"] = True
        if "export_onnx" in given:
            overrides["export_onnx"] = True
        return smoke_config(regime, **overrides)
    return TrainConfig(regime=regime, **values)


def main(argv: Sequence[str] | None = None, regime: str = "baseline") -> dict:
    """Parses ``argv``, runs one training run, prints the final metrics; returns the summary."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser(regime).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args, regime, argv)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    from yolos_bf16accum.train import run

    if args.eval_only:
        from yolos_bf16accum.ablation import parse_groups
        try:
            groups = parse_groups(args.ablate)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)  # the CLI owns this process; recorded in config.json
    from yolos_bf16accum.model import ModelLoadError

    try:
        if args.eval_only:
            from yolos_bf16accum.ablation import run_ablation

            result = run_ablation(cfg, groups, args.ablate_seeds, args.init_checkpoint)
            print(f"[ablation] {len(result['rows'])} configurations -> {cfg.output_dir}/ablation.md")
            return result
        summary = run(cfg)
    except ModelLoadError as e:   # a missing model is a usage error, not a crash: no traceback
        raise SystemExit(f"error: {e}") from None
    except (ValueError, FileNotFoundError) as e:
        if not (args.eval_only or args.resume):
            raise
        raise SystemExit(f"error: {e}") from None
    if not summary:            # a rank other than 0 of a distributed run: rank 0 reports
        return summary
    final = summary["final"]
    print(f"[{regime}] final AP {final['AP']:.4f} AP50 {final['AP50']:.4f} eval loss {final['loss']:.4f} "
          f"after {summary['final_step']} steps -> {cfg.output_dir}/metrics_summary.json")
    if summary.get("onnx", {}).get("AP") is not None:
        print(f"[{regime}] ONNX (float model, yolo_common.onnx_eval): AP {summary['onnx']['AP']:.4f} "
              f"AP50 {summary['onnx']['AP50']:.4f} ({summary['onnx']['model']})")
    return summary
