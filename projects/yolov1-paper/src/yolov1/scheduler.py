"""The paper's learning-rate schedule: linear warm-up, then steps (paper §2.2).

    "For the first epochs we slowly raise the learning rate from 1e-3 to 1e-2 ... We continue training
     with 1e-2 for 75 epochs, then 1e-3 for 30 epochs, and finally 1e-4 for 30 epochs."

So: ``warmup_start`` -> ``lr`` linearly over ``warmup_epochs`` (fractional epochs: the rate changes every
iteration, not in epoch-sized jumps), ``lr`` until the first milestone (epoch 75), times ``gamma`` at
every milestone (75, 105), until ``epochs`` (135). The warm-up counts inside the first 75 epochs, so the
total stays the paper's 135.

The LR is set on the optimizer directly every step (``apply``), not through a torch LR scheduler: under
accelerate a prepared scheduler steps once per process per call, which silently rescales the schedule
with the number of GPUs. A function of the (fractional) epoch has no such state to get wrong, and a
resumed run just asks for the epoch it is at.

    python -m yolov1.scheduler       # prints the paper schedule at a few epochs
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepSchedule:
    """Warm-up + step learning rate as a pure function of the fractional epoch."""

    lr: float = 1e-2
    warmup_epochs: float = 1.0
    warmup_start: float = 1e-3
    milestones: tuple[float, ...] = (75.0, 105.0)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.warmup_start < 0 or self.warmup_epochs < 0:
            raise ValueError(f"bad schedule {self}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")

    def lr_at(self, epoch: float) -> float:
        """The learning rate at fractional epoch ``epoch`` (``epoch + i / iters_per_epoch``)."""
        if epoch < self.warmup_epochs:
            t = epoch / self.warmup_epochs
            return self.warmup_start + (self.lr - self.warmup_start) * t
        steps = sum(epoch >= m for m in self.milestones)
        return self.lr * self.gamma**steps

    def apply(self, optimizer: torch.optim.Optimizer, epoch: float) -> float:
        """Sets every param group's LR for ``epoch`` and returns it."""
        lr = self.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def paper_schedule(epochs: int = 135) -> StepSchedule:
    """The paper's detection schedule, its phases scaled to ``epochs`` (135 gives 75 / 105 exactly)."""
    f = epochs / 135.0
    return StepSchedule(lr=1e-2, warmup_epochs=max(1.0, round(1.0 * f, 3)) if epochs >= 1 else 0.0,
                        warmup_start=1e-3, milestones=(75.0 * f, 105.0 * f), gamma=0.1)


def main(argv: Sequence[str] | None = None) -> None:
    """Prints the schedule at key epochs and checks it against the paper's numbers."""
    s = paper_schedule(135)
    points = [0.0, 0.5, 1.0, 50.0, 74.99, 75.0, 104.99, 105.0, 134.99]
    for e in points:
        print(f"epoch {e:7.2f}: lr {s.lr_at(e):.2e}")
    want = {0.0: 1e-3, 0.5: 5.5e-3, 1.0: 1e-2, 74.99: 1e-2, 75.0: 1e-3, 105.0: 1e-4}
    ok = all(abs(s.lr_at(e) - v) < 1e-12 for e, v in want.items())
    print("self-check:", "OK" if ok else "FAILED")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
