"""bench-bf16acc: what exact bf16 accumulation costs next to the standard matmul, on YOLOS-tiny's shapes.

CPU: the torch emulation (per-MAC and chunk 32) vs fp32 ``F.linear`` / ``torch.matmul``.
CUDA (when present): the Triton kernel vs torch's bf16 matmul (cuBLAS, fp32 accumulation on tensor
cores), plus a bit-identity check of kernel vs emulation on each shape.
Ratios are measured in the same run, so they hold on any machine; absolute times depend on it.

    python -m yolos_bf16accum.bench [--batch 1] [--image 512] [--repeats 3] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def yolos_tiny_shapes(batch: int, image: int) -> list[tuple[str, str, tuple, tuple]]:
    """``(name, kind, a_shape, b_shape)``: linear ``x [M, K] @ W [N, K]ᵀ`` or attention bmm shapes.

    Sequence length = 1 cls + (image/16)² patches + 100 detection tokens (1125 at 512²); hidden 192,
    3 heads of 64, MLP 768.
    """
    seq = 1 + (image // 16) ** 2 + 100
    m = batch * seq
    return [
        ("q/k/v/out proj  K=192 N=192", "linear", (m, 192), (192, 192)),
        ("mlp fc1         K=192 N=768", "linear", (m, 192), (768, 192)),
        ("mlp fc2         K=768 N=192", "linear", (m, 768), (192, 768)),
        (f"attn QK^T       K=64  S={seq}", "bmm", (batch * 3, seq, 64), (batch * 3, 64, seq)),
        (f"attn PV         K={seq} N=64", "bmm", (batch * 3, seq, seq), (batch * 3, seq, 64)),
    ]


def _time(fn: Callable[[], torch.Tensor], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up (Triton compiles here)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_cpu(batch: int, image: int, repeats: int, chunks: Sequence[int]) -> list[dict]:
    from yolos_bf16accum.emulation import bf16acc_matmul

    rows = []
    for name, kind, sa, sb in yolos_tiny_shapes(batch, image):
        a, b = torch.randn(sa), torch.randn(sb)
        if kind == "linear":
            base = _time(lambda: F.linear(a, b), repeats, lambda: None)
            bt = b.t()
        else:
            base = _time(lambda: torch.matmul(a, b), repeats, lambda: None)
            bt = b
        row = {"shape": name, "fp32 ms": base * 1e3}
        for c in chunks:
            t = _time(lambda c=c: bf16acc_matmul(a, bt, c), max(1, repeats // 2), lambda: None)
            row[f"emul chunk{c} ms"] = t * 1e3
            row[f"chunk{c} / fp32"] = t / base
        rows.append(row)
    return rows


def bench_cuda(batch: int, image: int, repeats: int, chunks: Sequence[int]) -> list[dict]:
    from yolos_bf16accum.emulation import bf16acc_matmul
    from yolos_bf16accum.triton_kernels import triton_bf16acc_matmul

    sync = torch.cuda.synchronize
    rows = []
    for name, kind, sa, sb in yolos_tiny_shapes(batch, image):
        a = torch.randn(sa, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(sb, device="cuda", dtype=torch.bfloat16)
        bt = b.t() if kind == "linear" else b
        base = _time(lambda: torch.matmul(a, bt), repeats * 10, sync)
        row = {"shape": name, "cuBLAS bf16 ms": base * 1e3}
        for c in chunks:
            t = _time(lambda c=c: triton_bf16acc_matmul(a, bt, c), repeats * 10, sync)
            same = torch.equal(triton_bf16acc_matmul(a, bt, c).float() + 0, bf16acc_matmul(a, bt, c).float() + 0)
            row[f"triton chunk{c} ms"] = t * 1e3
            row[f"chunk{c} / cuBLAS"] = t / base
            row[f"chunk{c} bit-exact"] = same
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> dict:
    from yolo_common.runlog import markdown_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1, help="images per batch (M = batch x sequence length)")
    p.add_argument("--image", type=int, default=512, help="square input side (sequence 1125 at 512)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunks", default="1,32", help="accum_chunk values to time")
    p.add_argument("--quick", action="store_true", help="256 px input (sequence 357): a few seconds")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for both sides (default 1: on a shared 2-core box, OpenMP's 2-thread "
                        "barriers made each small emulation op ~300x slower; 1 thread compares algorithms)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)  # this process is the benchmark: a global setting is fine
    image = 256 if args.quick else args.image
    chunks = [int(c) for c in args.chunks.split(",")]
    torch.manual_seed(0)
    out = {}
    if args.device in ("auto", "cpu"):
        print(f"CPU ({torch.get_num_threads()} threads), batch {args.batch}, {image}x{image}: torch emulation "
              f"vs fp32 F.linear / matmul (best of {args.repeats})")
        out["cpu"] = bench_cpu(args.batch, image, args.repeats, chunks)
        print(markdown_table(out["cpu"], floatfmt=".1f"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        print(f"\n{torch.cuda.get_device_name()}: Triton kernel vs torch bf16 matmul (cuBLAS)")
        out["cuda"] = bench_cuda(args.batch, image, args.repeats, chunks)
        print(markdown_table(out["cuda"], floatfmt=".3f"))
    elif args.device == "auto":
        print("\nno CUDA device: Triton kernel timing skipped")
    return out


if __name__ == "__main__":
    main()
