"""Crash-safe checkpoints: atomic save, safe load, and a last/best manager.

A checkpoint written in place is destroyed by a kill (OOM, preemption, Ctrl-C) in the middle of
``torch.save``, and usually it is ``last.pt`` -- the one you need to resume. So every write goes to a
temp file in the same directory, is fsync'ed, then ``os.replace``'d over the target: readers see the
old file or the new one, never half of one. Same directory matters: ``os.replace`` is only atomic
within one filesystem.

Loading defaults to ``weights_only=True``: unpickling an arbitrary checkpoint can run arbitrary code,
and ours only ever hold tensors, dicts, lists and numbers.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

_META_NAME = "checkpoints.json"
_EPOCH_RE = re.compile(r"^epoch_(\d+)\.pt$")


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable across a power loss. Not possible on Windows (cannot open a
    # directory); there the rename is still atomic, just not guaranteed flushed.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    # Hidden, unique, and in the target's directory so os.replace stays on one filesystem.
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"


def _atomic_write(path: Path, write) -> Path:
    """Calls ``write(fileobj)`` on a temp file next to ``path`` and renames it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    # Not tempfile.mkstemp: it creates files 0600, and checkpoints should get the usual umask modes.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-save must not leave a stray temp file either.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (temp file in the same folder + fsync + rename; parents made).

    A kill mid-write leaves the old file (or none) and at most a hidden ``.<name>.<id>.tmp``, which
    ``sweep_stale_temps`` (run by every ``CheckpointManager``) removes.
    """
    return _atomic_write(Path(path), lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, allow_nan: bool = True) -> Path:
    """``json.dumps(to_jsonable(obj))`` written atomically as UTF-8 (numpy/torch values become plain)."""
    from yolo_common.runlog import to_jsonable

    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=allow_nan) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def sweep_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Removes the temp files killed writers left in ``directory`` (this module's naming only).

    Call it where one process owns the folder (``CheckpointManager`` does, on construction): a live
    writer's temp file in the same folder would be removed too. 10 kills of a YOLOv10 run left 69 MB.
    """
    d = Path(directory)
    removed = []
    if d.is_dir():
        for f in d.iterdir():
            if _TEMP_RE.match(f.name) and f.is_file():
                with contextlib.suppress(OSError):
                    f.unlink()
                    removed.append(f)
    return removed


def save_checkpoint(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically ``torch.save``s ``obj`` to ``path`` (parent directories are created).

    Costs one fsync per call (milliseconds on local disk, more on network filesystems), which is
    noise next to an epoch.

    Returns:
        The path written.
    """
    return _atomic_write(Path(path), lambda f: torch.save(obj, f))


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", weights_only: bool = True
) -> Any:
    """Loads a checkpoint, by default refusing anything but tensors and plain containers/numbers.

    Args:
        path: the ``.pt`` file.
        map_location: passed to ``torch.load``; cpu by default so a checkpoint from any device loads
            anywhere (move the model afterwards).
        weights_only: keep ``True`` unless the file is your own and holds custom objects; ``False``
            unpickles arbitrary code.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        pickle.UnpicklingError: with ``weights_only=True``, the file holds a non-allowlisted object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"checkpoint not found: {path}", str(path))
    return torch.load(path, map_location=map_location, weights_only=weights_only)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Atomically makes ``dst`` hold ``src``'s content.

    A hard link costs no I/O and is safe here because checkpoints are never modified in place: the next
    ``save_checkpoint`` to ``src`` replaces its directory entry and leaves ``dst``'s inode alone.
    Filesystems without hard links get a copy.
    """
    tmp = _temp_name(dst)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class CheckpointManager:
    """Keeps ``last.pt``, ``best.pt`` and optionally ``epoch_N.pt`` in one directory.

    The best metric and its epoch are persisted in ``checkpoints.json`` next to the files, so a
    resumed run (a new manager on the same directory) only replaces ``best.pt`` on a real improvement;
    the persisted direction (``higher_is_better``) wins over the constructor's, since the stored best
    only means something in its own direction.
    Only rank 0 should own a manager.

    Args:
        directory: where the files go (created on the first save).
        higher_is_better: default direction for ``save``'s metric (mAP: True, loss: False).
        keep_history: 0 keeps no per-epoch files, ``k > 0`` keeps the newest ``k`` ``epoch_N.pt``,
            -1 keeps all of them. History files are hard links where possible, so they cost disk
            space only once ``last.pt`` has moved on.
    """

    def __init__(self, directory: str | os.PathLike, *, higher_is_better: bool = True,
                 keep_history: int = 0) -> None:
        if keep_history < -1:
            raise ValueError(f"keep_history must be -1, 0 or positive, got {keep_history}")
        self.directory = Path(directory)
        self.higher_is_better = higher_is_better
        self.keep_history = keep_history
        self.swept = sweep_stale_temps(self.directory)  # left by a kill of an earlier run
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.last_epoch: int | None = None
        meta_path = self.directory / _META_NAME
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            self.best_metric = meta.get("best_metric")
            self.best_epoch = meta.get("best_epoch")
            self.last_epoch = meta.get("last_epoch")
            self.higher_is_better = meta.get("higher_is_better", higher_is_better)

    @property
    def last_path(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.pt"

    def epoch_path(self, epoch: int) -> Path:
        return self.directory / f"epoch_{epoch}.pt"

    def is_improvement(self, metric: float, higher_is_better: bool | None = None) -> bool:
        """Whether ``metric`` beats the stored best (NaN never does; anything beats no best)."""
        if math.isnan(metric):
            return False
        if self.best_metric is None:
            return True
        hib = self.higher_is_better if higher_is_better is None else higher_is_better
        return metric > self.best_metric if hib else metric < self.best_metric

    def save(self, state: Any, *, epoch: int, metric: float | None = None,
             higher_is_better: bool | None = None, history: bool = True) -> bool:
        """Writes ``last.pt`` and, when ``metric`` improves on the best so far, ``best.pt``.

        Args:
            state: anything ``torch.save`` takes (keep it to tensors/dicts/numbers so
                ``weights_only`` loading works).
            epoch: the epoch this state finished.
            metric: validation metric; ``None`` (no eval this epoch) never updates ``best.pt``.
            higher_is_better: overrides the manager's direction for this call.
            history: ``False`` for a state saved part-way through an epoch (a ``steps N`` stop): it
                must not take the place of ``epoch_N.pt``, the state at the end of epoch N.

        Returns:
            True when ``best.pt`` was updated.
        """
        save_checkpoint(state, self.last_path)
        self.last_epoch = int(epoch)
        is_best = False
        if metric is not None:
            metric = float(metric)  # tensors / numpy scalars -> JSON-able float
            if self.is_improvement(metric, higher_is_better):
                _link_or_copy(self.last_path, self.best_path)
                self.best_metric, self.best_epoch, is_best = metric, int(epoch), True
        if self.keep_history and history:
            _link_or_copy(self.last_path, self.epoch_path(epoch))
            self._prune_history()
        self._write_meta()
        return is_best

    def _prune_history(self) -> None:
        if self.keep_history < 0:
            return
        epochs = sorted(int(m.group(1)) for p in self.directory.iterdir()
                        if (m := _EPOCH_RE.match(p.name)))
        for old in epochs[: max(len(epochs) - self.keep_history, 0)]:
            self.epoch_path(old).unlink(missing_ok=True)

    def _write_meta(self) -> None:
        meta = {"best_metric": self.best_metric, "best_epoch": self.best_epoch,
                "last_epoch": self.last_epoch, "higher_is_better": self.higher_is_better}
        data = json.dumps(meta, indent=2).encode()
        _atomic_write(self.directory / _META_NAME, lambda f: f.write(data))

    def load(self, which: str = "last", map_location: Any = "cpu",
             weights_only: bool = True) -> Any | None:
        """Loads ``last``/``best`` (or an epoch number); ``None`` when the file does not exist yet."""
        path = self.epoch_path(int(which)) if str(which).isdigit() else self.directory / f"{which}.pt"
        if not path.is_file():
            return None
        return load_checkpoint(path, map_location=map_location, weights_only=weights_only)
