"""What a reduced-precision accumulation datapath does: one frozen, hashable spec for every backend.

``AccumSpec(chunk=1)`` is the seed's per-MAC bf16 accumulation; every other field defaults to it. An int
wherever a spec is taken means ``AccumSpec(chunk=that int)`` (the old ``accum_chunk`` argument).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from yolos_bf16accum.formats import FloatFormat, check_rounding, parse_format

BIAS_PLACES = ("epilogue", "init")


def check_accum_chunk(accum_chunk: int) -> int:
    """Validates ``accum_chunk`` (a positive int) and returns it."""
    if isinstance(accum_chunk, bool) or not isinstance(accum_chunk, int) or accum_chunk < 1:
        raise ValueError(f"accum_chunk must be a positive integer (1 = per-MAC, 16/32/64 = K-block), "
                         f"got {accum_chunk!r}")
    return accum_chunk


@dataclass(frozen=True)
class AccumSpec:
    """A reduced-precision matmul: operand format, accumulator format, rounding, chunking, bias entry.

    Semantics (the emulation is the definition, the kernel matches it bit for bit):
    operands are rounded (RNE) to ``operands``; products are exact in fp32 (operand mantissas <= 11 bits);
    ``chunk`` consecutive products are summed in fp32 in k order; the running sum is updated
    ``s = round_acc(fp32(s + chunk_sum))`` with ``rounding``. ``bias="init"`` starts ``s`` at the
    (accumulator-rounded) bias; ``"epilogue"`` adds it at the end with one round-to-nearest.
    """

    chunk: int = 1              # products summed in fp32 between roundings (1 = per-MAC)
    acc: str = "bf16"           # accumulator format: bf16 | fp16 | e5m2 | e4m3fn | fp32 | e<E>m<M>[fn]
    rounding: str = "rne"       # rne | rtz | sr (stochastic, seeded)
    operands: str = "bf16"      # operand format (mantissa <= 11 bits so products are exact in fp32)
    bias: str = "epilogue"      # epilogue | init (where a Linear's bias enters the sum)
    seed: int = 0               # stochastic rounding's stream (mixed with a per-call counter in layers)

    def __post_init__(self) -> None:
        check_accum_chunk(self.chunk)
        parse_format(self.acc)
        check_rounding(self.rounding)
        op = parse_format(self.operands)
        if op.man_bits > 11:
            raise ValueError(f"operand format {self.operands!r} has {op.man_bits} mantissa bits: products of "
                             f"operands with more than 11 are not exact in fp32 (bf16, fp16 and fp8 are)")
        if self.bias not in BIAS_PLACES:
            raise ValueError(f"bias must be one of {', '.join(BIAS_PLACES)}, got {self.bias!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")

    @property
    def acc_format(self) -> FloatFormat:
        return parse_format(self.acc)

    @property
    def operand_format(self) -> FloatFormat:
        return parse_format(self.operands)

    @property
    def is_seed_default(self) -> bool:
        """The seed's datapath: bf16 operands, bf16 RNE accumulator (results come back as bf16 tensors)."""
        return self.acc_format.name == "bf16" and self.operand_format.name == "bf16" and self.rounding == "rne"

    @property
    def label(self) -> str:
        """Short name for tables and logs, e.g. ``bf16/rne/c32`` (operands and bias only when not default)."""
        s = f"{self.acc_format.name}/{self.rounding}/c{self.chunk}"
        if self.operand_format.name != "bf16":
            s += f"/op-{self.operand_format.name}"
        if self.bias != "epilogue":
            s += f"/bias-{self.bias}"
        return s

    def replace(self, **kw) -> AccumSpec:
        return dataclasses.replace(self, **kw)


def as_spec(accum: int | AccumSpec) -> AccumSpec:
    """An int chunk or a spec -> a validated spec."""
    if isinstance(accum, AccumSpec):
        return accum
    return AccumSpec(chunk=check_accum_chunk(accum))
