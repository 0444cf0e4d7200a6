"""The parametrised rounding against an exact oracle (Python integers and Fractions) for every format and mode,
against torch's own casts where torch has the format, and stochastic rounding's statistics."""

import bisect
import zlib
import math
from fractions import Fraction

import pytest
import torch

from yolos_bf16accum.formats import (FloatFormat, bits_to_fp32, fp32_bits, parse_format, random_bits,
                                     round_bits, round_to_format)

FORMATS = ["bf16", "fp16", "e5m2", "e4m3fn", "e6m7", "e3m2", "e7m12"]


def format_values(fmt: FloatFormat) -> list[Fraction]:
    """Every non-negative finite value of ``fmt`` in encoding order (so index parity = mantissa lsb)."""
    vals = []
    top = (1 << fmt.exp_bits) - 1
    for e in range(0, top + (1 if fmt.fn else 0)):
        for mant in range(1 << fmt.man_bits):
            if fmt.fn and e == top and mant == (1 << fmt.man_bits) - 1:
                continue  # the fn formats' NaN
            frac = Fraction(mant, 1 << fmt.man_bits)
            vals.append(frac * Fraction(2) ** fmt.emin if e == 0 else (1 + frac) * Fraction(2) ** (e - fmt.bias))
    return vals


def fp32_fraction(bits: int) -> Fraction:
    e, mant = (bits >> 23) & 0xFF, bits & 0x7FFFFF
    v = Fraction(mant, 1 << 23) * Fraction(2) ** -126 if e == 0 else (1 + Fraction(mant, 1 << 23)) * Fraction(2) ** (e - 127)
    return -v if bits >> 31 else v


def oracle(bits: int, fmt: FloatFormat, vals: list[Fraction], mode: str, r: int = 0) -> float:
    """The rounding from its definition: neighbours by search, the mode's choice, overflow by the rules."""
    e = (bits >> 23) & 0xFF
    neg = bool(bits >> 31)
    if e == 0xFF:
        if bits & 0x7FFFFF:
            return math.nan
        return (-1 if neg else 1) * (fmt.max if fmt.fn else math.inf)
    ax = abs(fp32_fraction(bits))
    mx = vals[-1]
    ulp_top = Fraction(2) ** (fmt.emax - fmt.man_bits)
    if ax > mx:
        lo, hi, lo_even = mx, mx + ulp_top, bool(fmt.fn)  # the virtual next value: inf (IEEE) / NaN slot (fn)
        i = None
    else:
        i = bisect.bisect_right(vals, ax) - 1
        lo = vals[i]
        hi = vals[i + 1] if i + 1 < len(vals) else mx + ulp_top
        lo_even = i % 2 == 0
    if ax == lo:
        res = lo
    elif mode == "rtz":
        res = lo
    elif mode == "rne":
        dlo, dhi = ax - lo, hi - ax
        res = lo if dlo < dhi or (dlo == dhi and lo_even) else hi
    else:
        frac = (ax - lo) / (hi - lo)
        res = hi if frac >= 1 or r < frac * 2 ** 32 else lo
    if res > mx:
        res = mx if (fmt.fn or mode == "rtz") else math.inf
    out = float(res) if res != math.inf else math.inf
    return -out if neg else out


def stress_inputs(fmt: FloatFormat, n: int, seed: int) -> torch.Tensor:
    """fp32 bit patterns that stress a format: random values over its whole range and beyond, the
    exact midpoints between neighbours (ties) and one fp32 ulp either side, every special."""
    g = torch.Generator().manual_seed(seed)
    lo_exp = max(fmt.emin - fmt.man_bits - 3, -149)
    hi_exp = min(fmt.emax + 2, 127)
    expo = torch.randint(lo_exp, hi_exp + 1, (n,), generator=g).float()
    rand = (torch.rand(n, generator=g) + 1) * torch.exp2(expo) * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    vals = format_values(fmt)
    idx = torch.randint(0, len(vals) - 1, (n,), generator=g).tolist()
    mids = torch.tensor([float((vals[i] + vals[i + 1]) / 2) for i in idx], dtype=torch.float32)
    mid_bits = fp32_bits(mids)
    specials = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, fmt.max, -fmt.max, 1e38, -3.0e38,
                             2.0 ** -149, -(2.0 ** -149), 2.0 ** -126, float(vals[1]), float(vals[1]) / 2,
                             float(vals[1]) * 0.75, float(vals[1]) * 0.25])
    return torch.cat([fp32_bits(rand), mid_bits, mid_bits + 1, mid_bits - 1, fp32_bits(specials),
                      torch.tensor([0x7FFFFFFF, 0xFFC00001, 0x7F800001], dtype=torch.int64)])


@pytest.mark.parametrize("mode", ["rne", "rtz", "sr"])
@pytest.mark.parametrize("name", FORMATS)
def test_round_bits_equals_exact_oracle(name, mode):
    fmt = parse_format(name)
    u = stress_inputs(fmt, 400, seed=zlib.crc32(f'{name}/{mode}'.encode()) % 1000)
    rb = random_bits(7, torch.arange(u.numel(), dtype=torch.int64), 3)
    got = bits_to_fp32(round_bits(u, fmt, mode, rb)).tolist()
    vals = format_values(fmt)
    for bits, r, g in zip(u.tolist(), rb.tolist(), got):
        want = oracle(bits, fmt, vals, mode, r)
        same = (math.isnan(want) and math.isnan(g)) or (want == g and math.copysign(1, want) == math.copysign(1, g))
        assert same, f"{name}/{mode}: input bits 0x{bits:08x} ({float(fp32_fraction(bits)) if (bits >> 23) & 0xFF != 0xFF else 'special'}) -> {g}, oracle {want}"


@pytest.mark.parametrize("name,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16),
                                        ("e5m2", torch.float8_e5m2), ("e4m3fn", torch.float8_e4m3fn)])
def test_rne_equals_torch_casts(name, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, generator=g) * torch.exp2(torch.randint(-150, 128, (200_000,), generator=g).float())
    x = torch.cat([x, torch.tensor([0.0, -0.0, math.inf, -math.inf, 65520.0, 65519.0, 464.0, 61440.0])])
    ours = bits_to_fp32(round_bits(fp32_bits(x), parse_format(name), "rne"))
    ref = x.to(dtype).float()
    assert torch.equal(ours.isnan(), ref.isnan())
    keep = ~ref.isnan()
    assert torch.equal(ours[keep], ref[keep]) and torch.equal(ours[keep].signbit(), ref[keep].signbit())
    # and the fast path of round_to_format gives the same bits as the integer path
    assert torch.equal(round_to_format(x, name)[keep], ours[keep])


def test_stochastic_rounding_is_unbiased_and_seeded():
    fmt = parse_format("bf16")
    x = torch.full((200_000,), 1.0 + 0.3 * 2 ** -7)   # 30% of the way from 1 to the next bf16 value
    idx = torch.arange(x.numel(), dtype=torch.int64)
    r = round_to_format(x, fmt, "sr", random_bits(1, idx, 0))
    assert set(r.unique().tolist()) == {1.0, 1.0 + 2 ** -7}
    up = (r > 1).double().mean().item()
    assert abs(up - 0.3) < 4 * math.sqrt(0.3 * 0.7 / x.numel())       # 4 sigma
    assert abs(r.double().mean().item() - x[0].item()) < 2e-5
    assert torch.equal(r, round_to_format(x, fmt, "sr", random_bits(1, idx, 0)))   # reproducible
    other = round_to_format(x, fmt, "sr", random_bits(2, idx, 0))
    assert not torch.equal(r, other)
    assert not torch.equal(random_bits(1, idx, 0), random_bits(1, idx, 1))        # every step fresh bits
    # exact representable values never move, whatever the bits
    exact = torch.tensor([1.0, 0.5, -3.0, 2.0 ** -130])
    assert torch.equal(round_to_format(exact, fmt, "sr", torch.tensor([0, 1, 2 ** 31, 2 ** 32 - 1])), exact)


def test_bad_formats_and_modes_are_clear_errors():
    for bad in ("e9m3", "e4m0", "fp8", "e5m30", "e7m23", "e8m7fn"):
        with pytest.raises(ValueError, match="format"):
            parse_format(bad)
    with pytest.raises(ValueError, match="rounding"):
        round_to_format(torch.ones(2), "e5m2", "nearest")
    with pytest.raises(ValueError, match="random bits"):
        round_to_format(torch.ones(2), "e5m2", "sr")
    assert parse_format("e8m7").max == parse_format("bf16").max == torch.finfo(torch.bfloat16).max
    assert parse_format("e4m3fn").max == 448.0 and parse_format("e5m2").max == 57344.0
    assert parse_format("fp16").max == 65504.0
