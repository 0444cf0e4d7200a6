"""Progressive schedule: which groups and encoder blocks accumulate in bf16 at a given step.

``--schedule "attn@0.2,mlp@0.4,qkv@0.6,head@0.8"`` switches each group on at that fraction of the total
optimisation steps. With ``--ramp_mode all`` a group covers every block at once. With ``--ramp_mode
blocks`` it covers ``blocks_per_stage`` more blocks (from block 0 upward) per stage, the stages spread
evenly over the steps left after the group's start, so the last stage starts at or before the last step:
by the end of training **every** block is patched (upstream stopped at stages x blocks_per_stage = 8 of
12 blocks). ``head`` and ``patch_embed`` have no blocks and switch on whole.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from yolos_bf16accum.patching import GROUPS, WHOLE_GROUPS


@dataclass(frozen=True)
class ScheduleEntry:
    """One ``group@fraction`` item."""

    group: str
    fraction: float


def parse_schedule(text: str) -> list[ScheduleEntry]:
    """Parses ``"attn@0.2,mlp@0.4"`` into entries sorted by fraction.

    Raises:
        ValueError: empty string, an item without ``@``, an unknown or repeated group, or a fraction
            that is not a number in ``[0, 1)`` (a group starting at 1.0 would never run).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty --schedule; expected e.g. 'attn@0.2,mlp@0.4,qkv@0.6,head@0.8'")
    entries: list[ScheduleEntry] = []
    for item in text.split(","):
        item = item.strip()
        group, sep, frac = item.partition("@")
        group, frac = group.strip(), frac.strip()
        if not sep or not group or not frac:
            raise ValueError(f"bad schedule item {item!r} in {text!r}: expected group@fraction, "
                             f"e.g. attn@0.2")
        if group not in GROUPS:
            raise ValueError(f"bad schedule item {item!r}: unknown group {group!r}; "
                             f"expected one of {', '.join(GROUPS)}")
        try:
            fraction = float(frac)
        except ValueError:
            raise ValueError(f"bad schedule item {item!r}: fraction {frac!r} is not a number") from None
        if not (0.0 <= fraction < 1.0):
            raise ValueError(f"bad schedule item {item!r}: fraction must be in [0, 1), got {fraction}")
        if any(e.group == group for e in entries):
            raise ValueError(f"group {group!r} appears twice in schedule {text!r}")
        entries.append(ScheduleEntry(group, fraction))
    return sorted(entries, key=lambda e: e.fraction)


class ProgressiveSchedule:
    """Maps a step to ``{group: enabled blocks}`` (``head``/``patch_embed`` map to ``(0,)`` when on).

    Args:
        entries: parsed schedule (``parse_schedule``).
        total_steps: optimisation steps of the whole run (steps are 0-based: the last is total - 1).
        num_blocks: encoder blocks of the model.
        ramp_mode: ``blocks`` or ``all``.
        blocks_per_stage: blocks a ``blocks`` ramp adds per stage.
    """

    def __init__(self, entries: Sequence[ScheduleEntry], total_steps: int, num_blocks: int,
                 ramp_mode: str = "blocks", blocks_per_stage: int = 2) -> None:
        if ramp_mode not in ("blocks", "all"):
            raise ValueError(f"ramp_mode must be 'blocks' or 'all', got {ramp_mode!r}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.entries = list(entries)
        self.total_steps = total_steps
        self.num_blocks = num_blocks
        self.ramp_mode = ramp_mode
        self.blocks_per_stage = blocks_per_stage
        # stage start steps per group; every list ends at or before total_steps - 1
        self.stage_starts: dict[str, list[int]] = {}
        for e in self.entries:
            start = min(math.floor(e.fraction * total_steps), total_steps - 1)
            if e.group in WHOLE_GROUPS or ramp_mode == "all":
                self.stage_starts[e.group] = [start]
                continue
            n = math.ceil(num_blocks / blocks_per_stage)
            left = total_steps - start
            self.stage_starts[e.group] = [start + (i * left) // n for i in range(n)]
        collapsed = {g: len(st) - len(set(st)) for g, st in self.stage_starts.items() if len(set(st)) < len(st)}
        starts = {e.group: self.stage_starts[e.group][0] for e in entries}
        fraction = {e.group: e.fraction for e in entries}
        # groups asked to start apart (different fractions) that land on the same step; groups given the same
        # fraction start together on purpose
        merged = any(starts[a] == starts[b] and fraction[a] != fraction[b] for a in starts for b in starts if a < b)
        if collapsed or merged:
            # e.g. a 4-step smoke run: several stages (or groups) start on the same step, so the
            # "progressive" ramp is a switch; the run is still valid, but it is not the ramp asked for
            warnings.warn(f"the progressive schedule collapses with {total_steps} steps: "
                          f"{'stages that start on the same step per group: ' + str(collapsed) + '; ' if collapsed else ''}"
                          f"group start steps {starts}. Train longer for a real ramp.",
                          RuntimeWarning, stacklevel=2)

    def blocks_at(self, group: str, step: int) -> tuple[int, ...]:
        """Blocks of ``group`` patched at ``step`` (empty before the group starts)."""
        starts = self.stage_starts.get(group)
        if not starts:
            return ()
        stages = sum(s <= step for s in starts)
        if stages == 0:
            return ()
        if group in WHOLE_GROUPS:
            return (0,)
        if self.ramp_mode == "all":
            return tuple(range(self.num_blocks))
        return tuple(range(min(self.num_blocks, stages * self.blocks_per_stage)))

    def state_at(self, step: int) -> dict[str, tuple[int, ...]]:
        """``{group: blocks}`` for every scheduled group that is on at ``step``."""
        state = {e.group: self.blocks_at(e.group, step) for e in self.entries}
        return {g: b for g, b in state.items() if b}

    def describe(self, step: int) -> dict[str, str]:
        """Log-friendly ``{group: "0-3 of 12" | "all" | "off"}`` for every scheduled group."""
        out = {}
        for e in self.entries:
            blocks = self.blocks_at(e.group, step)
            if not blocks:
                out[e.group] = "off"
            elif e.group in WHOLE_GROUPS:
                out[e.group] = "on"
            else:
                out[e.group] = f"blocks {blocks[0]}-{blocks[-1]} of {self.num_blocks}"
        return out
