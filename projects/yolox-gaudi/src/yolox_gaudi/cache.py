"""``--cache ram|disk``: decode every training image once, then serve the pixels from memory or ``.npy``.

Megvii's ``--cache`` keeps the images resized to the input size; this cache keeps exactly what
``CocoSource.load`` decodes (full-resolution RGB), so a cached run sees the same pixels as an uncached
one, bit for bit (tested), and every augmentation still resizes from the original.

- **ram**: one contiguous ``uint8`` buffer plus offsets, filled in the main process before the loader
  starts its workers. Forked workers then share the pages (a list of per-image arrays would have its
  object headers touched by reference counting and copied into every worker). Before filling, the bytes
  needed (from the annotation's width x height) are checked against ``MemAvailable``; too much stops
  the run with the numbers and the ``--cache disk`` alternative, as Megvii's memory check does.
- **disk**: one ``.npy`` per image under ``cache_dir`` with a manifest of (file, size, mtime); a changed
  or new image is decoded again, unchanged ones are reused across runs. Reads are memory-mapped.

An image that does not decode while filling is counted and logged once; asking for it later raises
``OSError`` again, so the loaders' ``SkipUnreadable`` handles it as it does without a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from yolo_common.preprocess import read_image

log = logging.getLogger("yolox_gaudi")
MODES = ("ram", "disk")


def available_memory_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (Linux), else free physical pages; ``None`` if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class ImageCache:
    """Decoded images of one split, by index.

    Args:
        records: the split's records (``path``, ``width``, ``height``).
        mode: ``"ram"`` or ``"disk"``.
        cache_dir: where ``disk`` keeps its files (required for ``disk``).
        threads: decoding threads while filling (PIL releases the GIL while decoding).
        headroom: fraction of the available memory the ``ram`` cache may take.
    """

    def __init__(self, records, mode: str, cache_dir: str | Path | None = None, threads: int = 8,
                 headroom: float = 0.8):
        if mode not in MODES:
            raise ValueError(f"cache mode must be ram or disk, got {mode!r}")
        if mode == "disk" and cache_dir is None:
            raise ValueError("a disk cache needs a cache_dir")
        self.records = list(records)
        self.mode = mode
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.threads = max(1, int(threads))
        self.headroom = headroom
        self.hits = 0                    # served from the cache (this process)
        self.unreadable: dict[int, str] = {}
        self._buf: np.ndarray | None = None
        self._offsets: np.ndarray | None = None
        self._shapes: np.ndarray | None = None
        self._fresh: set[int] | None = None      # disk, attach(): the entries the manifest vouches for

    def bytes_needed(self) -> int:
        """RGB bytes of every image, from the annotation's sizes (what the ram cache will hold)."""
        return int(sum(int(r.width) * int(r.height) * 3 for r in self.records))

    def check_memory(self, available: int | None = None) -> None:
        """Raises ``MemoryError`` (with the numbers) when the ram cache would not fit."""
        need = self.bytes_needed()
        available = available_memory_bytes() if available is None else available
        if available is not None and need > self.headroom * available:
            raise MemoryError(f"--cache ram needs {need / 2**30:.1f} GiB for {len(self.records)} decoded images but "
                              f"{available / 2**30:.1f} GiB is available ({self.headroom:.0%} may be used); use "
                              f"--cache disk, or no --cache")

    # ---- filling ----------------------------------------------------------------------------------

    def fill(self, check_memory: bool = True) -> ImageCache:
        """Decodes every image (disk: only the new or changed ones); logs progress and the time taken.
        ``check_memory=False`` when the caller checked already (every rank of a node checks before any
        fills, so no rank sees the memory another one has just taken)."""
        t0 = time.perf_counter()
        if self.mode == "ram":
            if check_memory:
                self.check_memory()
            self._fill_ram()
        else:
            self._fill_disk()
        if self.unreadable:
            first = next(iter(self.unreadable.values()))
            log.warning("cache: %d unreadable images (they will be skipped when drawn), e.g. %s",
                        len(self.unreadable), first)
        log.info("cache %s: %d images in %.1f s", self.mode, len(self.records), time.perf_counter() - t0)
        return self

    def _decode(self, i: int) -> np.ndarray | None:
        try:
            return read_image(self.records[i].path)
        except OSError as e:
            self.unreadable[i] = f"{self.records[i].path}: {e}"
            return None

    def _fill_ram(self) -> None:
        n = len(self.records)
        shapes = np.zeros((n, 3), np.int64)
        offsets = np.zeros(n + 1, np.int64)
        # Sizes from the annotation, then checked against each decoded image (a wrong json entry must
        # not overrun its neighbour in the buffer).
        sizes = np.array([int(r.width) * int(r.height) * 3 for r in self.records], np.int64)
        offsets[1:] = np.cumsum(sizes)
        buf = np.empty(int(offsets[-1]), np.uint8)
        step = max(n // 10, 1)
        with ThreadPoolExecutor(self.threads) as pool:
            for i, img in enumerate(pool.map(self._decode, range(n))):
                if img is not None:
                    if img.size != sizes[i]:
                        self.unreadable[i] = (f"{self.records[i].path}: decoded {img.shape[1]}x{img.shape[0]} but "
                                              f"the annotation says {self.records[i].width}x{self.records[i].height}")
                    else:
                        buf[offsets[i]:offsets[i + 1]] = img.reshape(-1)
                        shapes[i] = img.shape
                if (i + 1) % step == 0:
                    log.info("cache ram: %d/%d images decoded", i + 1, n)
        self._buf, self._offsets, self._shapes = buf, offsets, shapes

    def attach(self) -> ImageCache:
        """Disk mode, for the ranks that did not fill: read the manifest another rank wrote, write nothing
        (concurrent writers of one manifest would race). Images it does not list are decoded per read."""
        if self.mode != "disk":
            raise ValueError("attach() is for the disk cache; fill() the ram cache on every rank")
        try:
            manifest = json.loads((self.cache_dir / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = {}
        self._fresh = set()
        for i in range(len(self.records)):
            try:
                if manifest.get(str(i)) == self._key(i) and self._npy(i).is_file():
                    self._fresh.add(i)
            except OSError as e:
                self.unreadable[i] = f"{self.records[i].path}: {e}"
        return self

    def _key(self, i: int) -> str:
        r = self.records[i]
        st = os.stat(r.path)
        return f"{r.path}|{st.st_size}|{st.st_mtime_ns}"

    def _npy(self, i: int) -> Path:
        return self.cache_dir / f"{i:07d}_{hashlib.sha1(str(self.records[i].path).encode()).hexdigest()[:10]}.npy"

    def _fill_disk(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        manifest_path = self.cache_dir / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
        todo = []
        for i in range(len(self.records)):
            try:
                key = self._key(i)
            except OSError as e:
                self.unreadable[i] = f"{self.records[i].path}: {e}"
                continue
            if manifest.get(str(i)) != key or not self._npy(i).is_file():
                todo.append((i, key))

        def write(item):
            i, key = item
            img = self._decode(i)
            if img is None:
                return i, None
            tmp = self._npy(i).with_suffix(f".{os.getpid()}.tmp.npy")    # unique: nodes may share the folder
            np.save(tmp, img)
            tmp.replace(self._npy(i))           # atomic: a killed fill never leaves half a file
            return i, key

        with ThreadPoolExecutor(self.threads) as pool:
            for k, (i, key) in enumerate(pool.map(write, todo), 1):
                if key is not None:
                    manifest[str(i)] = key
                if k % max(len(todo) // 10, 1) == 0:
                    log.info("cache disk: %d/%d images written to %s", k, len(todo), self.cache_dir)
        if todo:
            tmp = manifest_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(manifest))
            tmp.replace(manifest_path)
        log.info("cache disk: %d of %d images reused from %s", len(self.records) - len(todo), len(self.records),
                 self.cache_dir)

    # ---- reading ----------------------------------------------------------------------------------

    def get(self, i: int) -> np.ndarray:
        """The decoded image ``i`` (a copy the caller may modify); ``OSError`` if it did not decode."""
        if i in self.unreadable:
            raise OSError(f"cannot read training image {self.unreadable[i]}")
        if self.mode == "ram":
            if self._buf is None:
                raise RuntimeError("ImageCache.get before fill()")
            a, b = self._offsets[i], self._offsets[i + 1]
            img = self._buf[a:b].reshape(tuple(self._shapes[i])).copy()
        elif self._fresh is not None and i not in self._fresh:
            img = read_image(self.records[i].path)      # not in the manifest this rank attached to
            return img
        else:
            img = np.array(np.load(self._npy(i), mmap_mode="r"))
        self.hits += 1
        return img


def local_world_size(environ=None) -> int:
    """Processes on this node, from torchrun's or MPI's variables (1 when none is set)."""
    environ = os.environ if environ is None else environ
    for var in ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_LOCAL_SIZE"):
        if environ.get(var):
            return max(int(environ[var]), 1)
    return 1


def default_cache_dir(output_dir: str | Path, data_dir: str | Path, split: str) -> Path:
    """``<output_dir>/cache/<split>-<hash of the data folder>``: shared by the runs of one output folder,
    separate per dataset, never inside the (possibly read-only) dataset."""
    digest = hashlib.sha1(str(Path(data_dir).resolve()).encode()).hexdigest()[:8]
    return Path(output_dir) / "cache" / f"{split}-{digest}"
