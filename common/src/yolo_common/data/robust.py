"""``SkipUnreadable``: a dataset wrapper so one undecodable image never ends an epoch.

Readers trust headers (COCO/VOC sizes come from the annotation file), so a truncated or corrupt image is
found only when a worker decodes it, maybe hours into a run. Wrapped, that sample is logged once (per
process), counted in shared memory (so the count covers every DataLoader worker) and replaced by the next
readable index, deterministically; ``mode="drop"`` returns ``None`` instead and ``drop_none(collate)``
removes it from the batch; ``mode="placeholder"`` returns ``dataset.placeholder(index)``, a stand-in the
caller recognises (for distributed evaluation: accelerate's ``gather_for_metrics`` trims the last batch's
padding by position, so every rank must keep yielding one sample per index). The run then reports
"N unreadable images skipped" (``summary()``).

Only decode failures are caught (``OSError``, which covers PIL's ``UnidentifiedImageError`` and truncated
files, plus ``UnreadableImage`` for loaders such as OpenCV that return ``None``); a label bug still raises.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("yolo_common.data")


class UnreadableImage(OSError):
    """Raise this from a loader whose decoder reports failure without an exception (cv2.imread -> None)."""


class SkipUnreadable:
    """Wraps any map-style dataset (``__len__`` + ``__getitem__``).

    Args:
        dataset: the dataset; ``describe(i)`` (if it has one) names the file of index i in the log.
        mode: "replace" (the next readable index), "drop" (return None; use ``drop_none``) or
            "placeholder" (return ``dataset.placeholder(index)``).
        errors: exception types that mean "this image does not decode".
        max_tries: consecutive unreadable indices before giving up with a RuntimeError.
    """

    def __init__(self, dataset, *, mode: str = "replace", errors: tuple[type[BaseException], ...] = (OSError,),
                 max_tries: int = 10):
        if mode not in ("replace", "drop", "placeholder"):
            raise ValueError(f"mode must be 'replace', 'drop' or 'placeholder', got {mode!r}")
        if mode == "placeholder" and not callable(getattr(dataset, "placeholder", None)):
            raise TypeError(f"mode='placeholder' needs {type(dataset).__name__}.placeholder(index)")
        self.dataset, self.mode, self.errors, self.max_tries = dataset, mode, tuple(errors), max_tries
        self._count = mp.Value("i", 0)  # shared with forked / spawned workers (pickled with the wrapper)
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # set_epoch, records, ... of the wrapped dataset
        if name.startswith("_") or name in _OWN:
            raise AttributeError(name)
        if name == "collate_fn" and self.mode == "drop":   # loaders that read dataset.collate_fn
            return drop_none(getattr(self.dataset, "collate_fn"))
        return getattr(self.dataset, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # A trainer that sets a flag on "its" dataset (loader.dataset.epoch = e) must reach the wrapped
        # one, or the flag would silently land on the wrapper. (ultralytics 8.4's close-mosaic assignment
        # is guarded by hasattr and YOLODataset has no such attribute, so it is not a consumer.)
        if name.startswith("_") or name in _OWN or "dataset" not in self.__dict__ or not hasattr(self.dataset, name):
            object.__setattr__(self, name, value)
        else:
            setattr(self.dataset, name, value)

    @property
    def skipped(self) -> int:
        """Unreadable loads so far, over every worker (an image read twice counts twice)."""
        return self._count.value

    def summary(self) -> str:
        return f"{self.skipped} unreadable images skipped" if self.skipped else "no unreadable images"

    def _name(self, i: int) -> str:
        describe = getattr(self.dataset, "describe", None)
        return describe(i) if callable(describe) else f"index {i}"

    def __getitem__(self, index: int):
        n = len(self.dataset)
        for k in range(min(self.max_tries, n)):
            j = (index + k) % n
            try:
                return self.dataset[j]
            except self.errors as e:
                with self._count.get_lock():
                    self._count.value += 1
                if j not in self._warned:
                    self._warned.add(j)
                    log.warning("unreadable image skipped: %s (%s: %s)", self._name(j), type(e).__name__, e)
                if self.mode == "drop":
                    return None
                if self.mode == "placeholder":
                    return self.dataset.placeholder(j)
        raise RuntimeError(f"{self.max_tries} consecutive images from index {index} do not decode; "
                           f"is the dataset readable? ({self._name(index)})")


class drop_none:  # noqa: N801 - used like a function; a class so spawned DataLoader workers can pickle it
    """A collate that first removes the ``None`` samples of ``SkipUnreadable(mode="drop")``."""

    def __init__(self, collate: Callable[[Sequence], Any]):
        self.collate = collate

    def __call__(self, batch: Sequence):
        return self.collate([b for b in batch if b is not None])


_OWN = frozenset({"dataset", "mode", "errors", "max_tries"})
