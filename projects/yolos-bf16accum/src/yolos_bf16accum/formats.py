"""Floating-point formats for accumulators and operands, and the one rounding every backend uses.

A format is ``(exp_bits, man_bits)`` with IEEE-style layout: bias ``2^(e-1) - 1``, subnormals, and the
top exponent reserved for inf/NaN, except the ``fn`` variants (OCP FP8 ``e4m3fn``), which use the top
exponent for numbers, have no inf and *saturate*: overflow and inf go to ±max (torch's
``float8_e4m3fn`` conversion and PTX ``cvt.satfinite`` do the same). Named presets: ``bf16`` (8, 7),
``fp16`` (5, 10), ``e5m2`` (5, 2), ``e4m3fn`` (4, 3, fn), ``fp32`` (8, 23: the identity); any other pair
is written ``e<E>m<M>``, e.g. ``e6m7`` for a 14-bit accumulator (Blumenfeld et al., ICLR 2024).

Rounding modes (``rne``, ``rtz``, ``sr``) act on an **fp32** input's bit pattern with integer arithmetic
only, so the Triton kernel runs the same steps on uint32 registers (``triton_kernels._round_bits``) and
the two agree bit for bit on every backend:

* ``rne``: round to nearest, ties to even; overflow -> inf (``fn``: saturate).
* ``rtz``: truncate the magnitude (many MMA datapaths do); overflow -> ±max.
* ``sr``: stochastic; with 32 random bits ``r`` the magnitude rounds up iff ``r < frac * 2^32``, where
  ``frac`` is the exact position between the two neighbours. That is unbiased in expectation up to
  2^-32 of a quantum and reproducible: ``r`` is a hash of (seed, output index, step), see
  :func:`random_bits`. Overflow -> inf (``fn``: saturate).

NaN -> the quiet NaN 0x7FC00000. Signs (incl. -0) are kept. Formats need ``e <= 8`` and ``m <= 23`` (they
must fit in fp32, the register the sums are formed in).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

ROUNDINGS = ("rne", "rtz", "sr")
MASK32 = 0xFFFFFFFF
QNAN = 0x7FC00000
INF = 0x7F800000


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format that fits in fp32."""

    exp_bits: int
    man_bits: int
    fn: bool = False     # OCP "finite" variant: no inf, top exponent holds numbers, saturating
    name: str = ""

    def __post_init__(self) -> None:
        if not (2 <= self.exp_bits <= 8 and 1 <= self.man_bits <= 23):
            raise ValueError(f"format e{self.exp_bits}m{self.man_bits}: need 2 <= exponent bits <= 8 and "
                             f"1 <= mantissa bits <= 23 (it must fit in fp32)")
        if self.man_bits == 23 and self.exp_bits != 8:
            raise ValueError(f"format e{self.exp_bits}m23: 23 mantissa bits only as fp32 (e8m23); the "
                             f"rounding needs at least one dropped bit")
        if self.fn and self.exp_bits == 8:
            raise ValueError(f"format e8m{self.man_bits}fn does not fit in fp32 (its top exponent is fp32's "
                             f"inf/NaN exponent)")
        if not self.name:
            object.__setattr__(self, "name", f"e{self.exp_bits}m{self.man_bits}{'fn' if self.fn else ''}")

    @property
    def is_fp32(self) -> bool:
        return (self.exp_bits, self.man_bits) == (8, 23)

    @property
    def bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite number (one more in ``fn`` formats)."""
        return self.bias + (1 if self.fn else 0)

    @property
    def max_bits(self) -> int:
        """fp32 bit pattern of the largest finite value (``fn``: the all-ones mantissa is NaN)."""
        mant = (1 << self.man_bits) - (2 if self.fn else 1)
        return ((self.emax + 127) << 23) | (mant << (23 - self.man_bits))

    @property
    def max(self) -> float:
        return float(torch.tensor([self.max_bits], dtype=torch.int64).to(torch.int32).view(torch.float32))

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits


PRESETS = {
    "bf16": FloatFormat(8, 7, name="bf16"),
    "fp16": FloatFormat(5, 10, name="fp16"),
    "e5m2": FloatFormat(5, 2, name="e5m2"),
    "e4m3fn": FloatFormat(4, 3, fn=True, name="e4m3fn"),
    "fp32": FloatFormat(8, 23, name="fp32"),
}


def parse_format(spec: str | FloatFormat) -> FloatFormat:
    """``bf16``/``fp16``/``e5m2``/``e4m3fn``/``fp32`` or ``e<E>m<M>[fn]`` -> :class:`FloatFormat`."""
    if isinstance(spec, FloatFormat):
        return spec
    s = str(spec).strip().lower()
    if s in PRESETS:
        return PRESETS[s]
    m = re.fullmatch(r"e(\d+)m(\d+)(fn)?", s)
    if not m:
        raise ValueError(f"unknown float format {spec!r}; expected one of {', '.join(PRESETS)} or "
                         f"e<exponent bits>m<mantissa bits>[fn], e.g. e6m7")
    return FloatFormat(int(m.group(1)), int(m.group(2)), fn=bool(m.group(3)))


def check_rounding(mode: str) -> str:
    if mode not in ROUNDINGS:
        raise ValueError(f"unknown rounding mode {mode!r}; expected one of {', '.join(ROUNDINGS)}")
    return mode


# ---- bit-level rounding (the definition) ------------------------------------------------------------

def fp32_bits(x: torch.Tensor) -> torch.Tensor:
    """fp32 tensor -> int64 tensor of its bit patterns as unsigned values (0 .. 2^32-1)."""
    return x.float().contiguous().view(torch.int32).to(torch.int64) & MASK32


def bits_to_fp32(u: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fp32_bits`."""
    return (u & MASK32).to(torch.uint32).view(torch.int32).view(torch.float32)


def round_bits(u: torch.Tensor, fmt: FloatFormat, mode: str = "rne", rbits: torch.Tensor | None = None) -> torch.Tensor:
    """Rounds fp32 bit patterns (int64, unsigned values) to ``fmt``; returns fp32 bit patterns of the result.

    The integer steps (mirrored op for op by the Triton kernel's ``_round_bits``):
    the magnitude's significand ``sig`` (24 bits with the hidden one) at exponent ``ex`` keeps its top
    bits down to the format's quantum there; ``d`` = dropped bits = ``23 - m`` in the normal range plus
    the distance below the format's smallest normal exponent (subnormal results). ``d >= 24`` means the
    value is below the smallest quantum: the result is 0 or that quantum.
    """
    if fmt.is_fp32:
        return u
    m = fmt.man_bits
    emin_b = fmt.emin + 127                            # smallest normal exponent, fp32-biased
    sign = u & 0x80000000
    a = u & 0x7FFFFFFF
    e32 = a >> 23
    ex = e32.clamp(min=1)                              # fp32 subnormals sit at exponent 1, no hidden bit
    sig = (a & 0x7FFFFF) | ((e32 > 0).to(torch.int64) << 23)
    d = (23 - m) + (emin_b - ex).clamp(min=0)
    dk = d.clamp(max=24)
    kept = sig >> dk
    rem = sig & ((1 << dk) - 1)
    if mode == "rne":
        half = 1 << (d.clamp(max=25) - 1)
        up = (rem > half) | ((rem == half) & ((kept & 1) == 1))
    elif mode == "rtz":
        up = torch.zeros_like(rem, dtype=torch.bool)
    elif mode == "sr":
        if rbits is None:
            raise ValueError("stochastic rounding needs random bits")
        # threshold = ceil(rem * 2^(32 - d)): round up iff r < frac * 2^32 (exact for every d)
        t = (d - 32).clamp(min=0, max=24)
        thr = torch.where(d <= 32, rem << (32 - d).clamp(min=0), (rem + (1 << t) - 1) >> t)
        up = (rbits & MASK32) < thr
    else:
        raise ValueError(f"unknown rounding mode {mode!r}")
    kept = kept + up.to(torch.int64)
    normal = ((ex - 1) << 23) + (kept << dk)            # a carry out of sig bumps the exponent: correct
    tiny = torch.where(up, (ex - 23 + d) << 23, torch.zeros_like(a))   # the smallest quantum, or 0
    res = torch.where(d >= 24, tiny, normal)
    over = (res > fmt.max_bits) | (a == INF)
    sat = torch.full_like(res, fmt.max_bits)
    if fmt.fn or mode == "rtz":
        res = torch.where(over, sat, res)
    else:
        res = torch.where(over, torch.full_like(res, INF), res)
    if mode == "rtz" and not fmt.fn:
        res = torch.where(a == INF, torch.full_like(res, INF), res)   # inf stays inf; only finite saturate
    return torch.where(a > INF, torch.full_like(res, QNAN), res | sign)


def round_to_format(x: torch.Tensor, fmt: FloatFormat | str, mode: str = "rne",
                    rbits: torch.Tensor | None = None) -> torch.Tensor:
    """Rounds ``x`` (as fp32) to ``fmt`` with ``mode``; returns fp32 holding the format's values.

    bf16 and fp16 with ``rne`` take torch's own casts (the same bits for every non-NaN input, tested; ~10x
    faster than the integer path); there a NaN keeps torch's NaN bits, not :func:`round_bits`' quiet NaN.
    The input is taken as fp32 first, so an fp64 input is rounded twice (fp64 -> fp32 -> ``fmt``).
    """
    fmt = parse_format(fmt)
    x = x.float()
    if fmt.is_fp32:
        return x
    if mode == "rne" and fmt.name in ("bf16", "fp16"):
        return x.to(torch.bfloat16 if fmt.name == "bf16" else torch.float16).float()
    check_rounding(mode)
    return bits_to_fp32(round_bits(fp32_bits(x), fmt, mode, rbits)).reshape(x.shape)


# ---- counter-based random bits (stochastic rounding) ------------------------------------------------

def mix32(x: torch.Tensor | int) -> torch.Tensor | int:
    """A 32-bit integer hash (Wellons' lowbias32) on int64 values; the kernel runs it on uint32."""
    x = x & MASK32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    x ^= x >> 16
    return x


def random_bits(seed: int, index: torch.Tensor, step: int) -> torch.Tensor:
    """32 random bits per element: ``mix32(index ^ mix32(seed ^ mix32(step)))`` (all mod 2^32).

    ``index`` is the flat output index (``(batch * M + m) * N + n``) and ``step`` the reduction step (the
    chunk number), so every rounding draws fresh bits and any backend can recompute them.
    """
    key = mix32(int(seed) ^ mix32(int(step)))
    return mix32(index ^ key)
