"""bench-bf16acc: what exact bf16 accumulation costs next to the standard matmul, on YOLOS-tiny's shapes.

CPU: the torch emulation (per-MAC and chunk 32) vs fp32 ``F.linear`` / ``torch.matmul``, naming the
path that ran (``addcmul-bf16``, ``bmm`` after its probe, or ``loop``; see ``emulation.py``).
CUDA (when present): the exact Triton kernel and the tensor-core variant vs torch's bf16 matmul (cuBLAS,
fp32 accumulation on tensor cores), with a bit-identity check of the exact kernel vs the emulation.
Ratios are measured in the same run, so they hold on any machine; absolute times depend on it.
Also an error-vs-K study: relative error vs a float64 reference per accumulator format, chunk and
rounding mode, written to ``<out>/error_vs_k.{csv,png}`` (and the timing tables to ``<out>/bench.json``).

    python -m yolos_bf16accum.bench [--batch 1] [--image 512] [--repeats 3] [--threads 1] [--quick]
                                    [--out runs/bench-bf16acc] [--no-error-study]
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
    from yolos_bf16accum.emulation import bf16acc_matmul, path_for

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
        nb = a.shape[0] if a.dim() == 3 else 1
        for c in chunks:
            t = _time(lambda c=c: bf16acc_matmul(a, bt, c), max(1, repeats // 2), lambda: None)
            row[f"chunk{c} path"] = path_for(c, nb, a.shape[-2], a.shape[-1], bt.shape[-1])
            row[f"emul chunk{c} ms"] = t * 1e3
            row[f"chunk{c} / fp32"] = t / base
        rows.append(row)
    return rows


def error_vs_k(formats: Sequence[str] = ("bf16", "fp16", "e5m2"), chunks: Sequence[int] = (1, 32),
               roundings: Sequence[str] = ("rne", "rtz", "sr"), ks: Sequence[int] = (64, 192, 768, 2048),
               m: int = 64, n: int = 64, seed: int = 0) -> list[dict]:
    """Relative Frobenius error of each datapath vs float64 (same bf16 operands), per K.

    Operands are N(0, 1), the regime of normalised activations and weights; the error of a sum of K
    terms grows ~sqrt(K) per-MAC with RNE, ~K with truncation (biased), and chunking divides the number
    of roundings by the chunk.
    """
    from yolos_bf16accum.emulation import accum_matmul, reference_matmul_fp64
    from yolos_bf16accum.spec import AccumSpec

    g = torch.Generator().manual_seed(seed)
    rows = []
    for k in ks:
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        ref = reference_matmul_fp64(a, b)
        for fmt in formats:
            for chunk in chunks:
                for rnd in roundings:
                    y = accum_matmul(a, b, AccumSpec(chunk, acc=fmt, rounding=rnd, seed=seed)).double()
                    err = ((y - ref).norm() / ref.norm()).item()
                    rows.append({"format": fmt, "chunk": chunk, "rounding": rnd, "K": k, "rel_err": err})
    return rows


def write_error_study(rows: list[dict], out) -> None:
    """``error_vs_k.csv`` and ``error_vs_k.png`` (one panel per format, a line per chunk x rounding)."""
    import csv
    import io
    from pathlib import Path

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from yolo_common.checkpoint import atomic_write_bytes

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(out / "error_vs_k.csv", buf.getvalue().encode())
    formats = list(dict.fromkeys(r["format"] for r in rows))
    fig, axes = plt.subplots(1, len(formats), figsize=(4.2 * len(formats), 3.6), sharey=True, squeeze=False)
    for ax, fmt in zip(axes[0], formats):
        keys = dict.fromkeys((r["chunk"], r["rounding"]) for r in rows if r["format"] == fmt)
        for chunk, rnd in keys:
            pts = [(r["K"], r["rel_err"]) for r in rows if (r["format"], r["chunk"], r["rounding"]) == (fmt, chunk, rnd)]
            ax.plot(*zip(*pts), marker="o", ls="-" if chunk == 1 else "--", label=f"chunk {chunk}, {rnd}")
        ax.set(xscale="log", yscale="log", xlabel="K (reduction length)", title=f"{fmt} accumulator")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("relative error vs fp64")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    img = io.BytesIO()
    fig.savefig(img, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out / "error_vs_k.png", img.getvalue())


def bench_cuda(batch: int, image: int, repeats: int, chunks: Sequence[int]) -> list[dict]:
    from yolos_bf16accum.emulation import bf16acc_matmul
    from yolos_bf16accum.triton_kernels import triton_bf16acc_matmul, triton_dot_matmul

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
            if c % 16 == 0:
                td = _time(lambda c=c: triton_dot_matmul(a, bt, c), repeats * 10, sync)
                ref = bf16acc_matmul(a, bt, c).float()
                err = ((triton_dot_matmul(a, bt, c).float() - ref).norm() / ref.norm()).item()
                row[f"tl.dot chunk{c} ms"] = td * 1e3
                row[f"tl.dot chunk{c} / cuBLAS"] = td / base
                row[f"tl.dot chunk{c} rel diff"] = err
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> dict:
    from yolo_common.runlog import markdown_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1, help="images per batch (M = batch x sequence length)")
    p.add_argument("--image", type=int, default=512, help="square input side (sequence 1125 at 512)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunks", default="1,32", help="accum_chunk values to time")
    p.add_argument("--quick", action="store_true", help="256 px input (sequence 357), a small error study")
    p.add_argument("--out", default="runs/bench-bf16acc", help="where bench.json and error_vs_k.{csv,png} go")
    p.add_argument("--no-error-study", dest="error_study", action="store_false", help="timings only")
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
    if args.error_study:
        ks = (64, 256, 1024) if args.quick else (64, 192, 768, 2048)
        rows = error_vs_k(ks=ks)
        write_error_study(rows, args.out)
        table = {}
        for r in rows:
            table.setdefault((r["format"], r["chunk"], r["rounding"]), {})[f"K={r['K']}"] = r["rel_err"]
        out["error_vs_k"] = rows
        print(f"\nrelative error vs fp64 (N(0,1) operands, 64x64 outputs) -> {args.out}/error_vs_k.{{csv,png}}")
        print(markdown_table([{"accumulator": f, "chunk": c, "rounding": m, **v} for (f, c, m), v in table.items()],
                             floatfmt=".2e"))
    from pathlib import Path

    from yolo_common.checkpoint import atomic_write_json

    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.out) / "bench.json", out)
    return out


if __name__ == "__main__":
    main()
