"""Train YOLOX on HPU, CUDA or CPU, on one device or many.

    python -m yolox_gaudi.train --name yolox-s --batch-size 8 --data_dir /data/COCO --use_hpu \\
        --hmp --hmp-opt-level O1 --hmp-fp32 ./ops_fp32_yolox.txt --hmp-bf16 ./ops_bf16_yolox.txt \\
        steps 500 output_dir ./yolox_output

The command lines of Habana's 1.6.1 port work as they are (``--use_hpu``, ``--hmp*``, ``--data_dir``,
trailing ``key value`` config overrides) next to the later spellings (``--hpu``, ``--autocast``,
``--model-name``, ``--data-dir``). ``--batch-size`` is the **global** batch (divided by the world size).
Every ``--flag`` must come before the first ``key value`` pair.

Assumptions and differences from the port, on purpose: BF16 is ``torch.autocast("hpu", bfloat16)`` with
the op lists set before the bridge loads (HMP is gone since Gaudi 1.12); the L1 loss keeps its gradient;
``False`` means False in overrides; the CUDA path works (AMP fp16 with ``--fp16``); the multiscale side is
the same on every rank by construction; ``--devices N`` without a launcher starts N local processes.

This module imports nothing heavy at the top: the HPU variables must be set before torch is imported.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

DEFAULT_DATA_DIR = os.path.join("datasets", "COCO")


def _str2bool(v: str) -> bool:
    """argparse type for ``--use_lazy_mode True/False`` (``yolo_common.config.parse_bool``; no torch import)."""
    from yolo_common.config import parse_bool

    try:
        return parse_bool(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    """The CLI (Habana 1.6.1 flags, later aliases, and this project's own)."""
    p = argparse.ArgumentParser(prog="python -m yolox_gaudi.train", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("-n", "--name", "--model-name", dest="name", default="yolox-s",
                   help="yolox-nano|tiny|s|m|l|x")
    g.add_argument("-f", "--exp_file", "--exp-file", dest="exp_file", default=None,
                   help="experiment file defining `class Exp` (Megvii's -f); wins over --name")
    g.add_argument("-expn", "--experiment-name", default=None, help="run folder name (default: the model name)")
    g.add_argument("-b", "--batch-size", type=int, default=64, help="GLOBAL batch size over all devices")
    g.add_argument("--data_dir", "--data-dir", dest="data_dir", default=None,
                   help=f"COCO root (default: $YOLOX_DATADIR, else ./{DEFAULT_DATA_DIR})")
    g.add_argument("--synthetic", action="store_true",
                   help="train and evaluate on yolo_common's synthetic shapes set (made in the run folder)")
    g.add_argument("--synthetic-size", type=int, default=160, help="image side of the synthetic set")
    g.add_argument("--synthetic-images", type=int, default=64, help="training images of the synthetic set")
    g.add_argument("-c", "--ckpt", "--ckpt-path", dest="ckpt", default=None,
                   help="initial weights (official Megvii .pth works) or, with --resume, the checkpoint to resume")
    g.add_argument("--resume", action="store_true", help="continue from the run's last.pt (or --ckpt)")
    g.add_argument("-e", "--start_epoch", "--start-epoch", dest="start_epoch", type=int, default=None,
                   help="override the resumed epoch")
    g.add_argument("--seed", type=int, default=0, help="seed for init, sampling, augmentation, multiscale")
    g.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (1 is far faster on a busy shared CPU: no OpenMP spinning)")

    g = p.add_argument_group("devices")
    g.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|hpu (--use_hpu = hpu)")
    g.add_argument("--use_hpu", "--hpu", dest="use_hpu", action="store_true", help="train on Gaudi")
    g.add_argument("-d", "--devices", type=int, default=None,
                   help="processes; without torchrun/mpirun, this many local ones are started")
    g.add_argument("--use_lazy_mode", type=_str2bool, default=True, help="HPU lazy mode (True/False)")
    g.add_argument("--noresize", action="store_true",
                   help="no multiscale: one input shape (each new shape recompiles on HPU)")
    g.add_argument("--loss-on-cpu", dest="loss_on_cpu", action="store_true", default=None,
                   help="SimOTA + loss on the CPU (default on HPU, as the port)")
    g.add_argument("--no-loss-on-cpu", dest="loss_on_cpu", action="store_false")
    g.add_argument("--dist-backend", "--dist_backend", dest="dist_backend", default=None,
                   choices=("nccl", "gloo", "hccl"),
                   help="torch.distributed backend (default: hccl on HPU, nccl on CUDA, gloo on CPU)")
    g.add_argument("--num_machines", "--num-machines", type=int, default=1, help="compatibility; use mpirun")
    g.add_argument("--machine_rank", "--machine-rank", type=int, default=0, help="compatibility")

    g = p.add_argument_group("precision")
    g.add_argument("--hmp", action="store_true", help="legacy HMP flag: BF16 autocast on HPU")
    g.add_argument("--hmp-bf16", default=None, help="BF16 op list (-> PT_HPU_AUTOCAST_LOWER_PRECISION_OPS_LIST)")
    g.add_argument("--hmp-fp32", default=None, help="FP32 op list (-> PT_HPU_AUTOCAST_FP32_OPS_LIST)")
    g.add_argument("--hmp-opt-level", default="O1",
                   help="O1 = BF16 autocast with the op lists (the only level torch.autocast has); O2 (the "
                        "removed HMP's all-bf16 level) is refused with a message")
    g.add_argument("--hmp-verbose", action="store_true", help="accepted for compatibility")
    g.add_argument("--autocast", dest="autocast", action="store_true", help="BF16 autocast (HPU naming)")
    g.add_argument("--fp16", action="store_true", help="AMP fp16 with loss scaling (CUDA)")
    g.add_argument("--precision", default=None, help="fp32|fp16|bf16 (overrides the flags above)")

    g = p.add_argument_group("logging")
    g.add_argument("-l", "--logger", default="tensorboard", help="tensorboard (always) or wandb (as well)")
    g.add_argument("--cache", nargs="?", const="ram", default=None, choices=("ram", "disk"),
                   help="cache decoded training images: ram (in memory, shared by loader workers; checks the "
                        "memory first) or disk (.npy files next to the run); Megvii's --cache")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: key value ...")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Parses the CLI; the trailing ``key value`` pairs land in ``opts``."""
    args = build_parser().parse_args(argv)
    late = [o for o in args.opts[0::2] if o.startswith("-")]
    if late:
        raise SystemExit(f"error: {late[0]} comes after the first `key value` override; put every --flag "
                         f"before the overrides (they are argparse REMAINDER, as in Megvii's train.py)")
    if args.hmp_opt_level != "O1":
        # HMP (Gaudi < 1.12) had O1 (op lists) and O2 (everything bf16 but a few ops); torch.autocast has
        # only the op-list behaviour. Accepting O2 and running O1 would be a silent change of numerics.
        raise SystemExit(f"error: --hmp-opt-level {args.hmp_opt_level} is not supported: HMP was removed in Gaudi "
                         f"1.12 and BF16 now runs as torch.autocast with the op lists (= O1). Use O1, and put "
                         f"the ops you want in bf16 into the --hmp-bf16 list")
    return args


def wants_hpu(args, find_spec=None) -> bool:
    """Whether this run goes to an HPU, decided *before* torch is imported (the ``PT_HPU_*`` variables
    must be set first). ``--device auto`` counts as HPU when the Habana packages are installed, so it
    gets the same set-up as ``--use_hpu`` (a CUDA host without them is unaffected; one with both still
    resolves to CUDA later, and the variables are then simply unused)."""
    import importlib.util

    find_spec = importlib.util.find_spec if find_spec is None else find_spec
    if args.use_hpu or args.device.startswith("hpu"):
        return True
    return args.device == "auto" and find_spec("habana_frameworks") is not None


def precision_of(args) -> str:
    """fp32 | fp16 | bf16 from the flags (``--precision`` wins)."""
    if args.precision:
        return args.precision
    if args.hmp or args.autocast:
        return "bf16"
    if args.fp16:
        return "fp16"
    return "fp32"


def _under_launcher(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return any(k in environ for k in ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(n: int, argv: list[str]) -> int:
    """Starts ``n`` copies of this command as ranks 0..n-1 (torchrun's variables), waits for all.

    Fresh processes (not fork) so each sets its HPU variables before its own bridge loads. If one
    fails the others are stopped.
    """
    port = os.environ.get("MASTER_PORT") or str(_free_port())
    procs = []
    for rank in range(n):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(n), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(n), MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"),
                   MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, "-m", "yolox_gaudi.train", *argv], env=env))
    rc = 0
    try:
        for p in procs:
            code = p.wait()
            if code and not rc:
                rc = code
                for q in procs:
                    if q.poll() is None:
                        q.terminate()
    except KeyboardInterrupt:
        for q in procs:
            q.terminate()
        raise
    return rc


def main(argv=None) -> int:
    """Entry point: set HPU variables, maybe spawn ranks, then train."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from .config import get_exp, load_exp_file

    try:
        exp = (load_exp_file(args.exp_file) if args.exp_file else get_exp(args.name)).merge(args.opts)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if wants_hpu(args):
        from . import hpu

        try:
            hpu.configure_env(bf16=precision_of(args) == "bf16", bf16_list=args.hmp_bf16, fp32_list=args.hmp_fp32,
                              lazy=args.use_lazy_mode)
            # Fail at once, before any data is touched, when the Habana stack is not there.
            import importlib.util

            if importlib.util.find_spec("habana_frameworks") is None:
                raise RuntimeError(f"--use_hpu needs the Habana packages (habana_frameworks is not installed); "
                                   f"{hpu.GAUDI_HINT}")
        except (RuntimeError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.devices and args.devices > 1 and not _under_launcher():
        return launch_local(args.devices, argv)
    from .trainer import DeviceError, UsageError, run

    try:
        run(args, exp)
    except (DeviceError, FileNotFoundError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
