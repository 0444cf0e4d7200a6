"""Image caches: decoded images resized to the training side, kept in RAM, on disk, or both.

- ``ram``: every image decoded and resized once, in the main process before workers start (forked workers
  share the pages). Cost: up to imgsz^2 * 3 bytes per image (the long side is imgsz): at most 1.2 GB per
  1,000 images at 640, about 0.9 GB for 4:3 photos.
- ``disk``: one file per image under the cache folder, ``.npy`` or compressed (``lz4`` fast, ``zstd``
  smaller); survives between runs.
- ``hybrid``: the disk cache, with its (compressed) bytes also held in RAM: no disk reads after start-up.
- ``ram`` with a compression: the RAM holds the compressed bytes (no disk): lz4 costs one fast decompress per
  sample and saves 2-4x memory on photos (less on noise-like synthetic images).

An entry's name is a hash of (path, size, mtime, imgsz, version): a changed file gets a new entry and is
rebuilt, a vanished one is pruned; ``stats`` counts hits and builds (a test checks both).
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

log = logging.getLogger("yolov9001.cache")
CACHE_VERSION = 1


def _compressor(kind: str):
    if kind == "none":
        return (lambda b: b), (lambda b: b)
    if kind == "lz4":
        import lz4.frame

        return lz4.frame.compress, lz4.frame.decompress
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress, zstandard.ZstdDecompressor().decompress
    raise ValueError(f"cache_compression must be none, lz4 or zstd, got {kind!r}")


def entry_key(path: Path, imgsz: int) -> str:
    st = os.stat(path)
    raw = f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{imgsz}|{CACHE_VERSION}"
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


def _encode(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, img, allow_pickle=False)
    return buf.getvalue()


def _decode(raw: bytes) -> np.ndarray:
    return np.load(io.BytesIO(raw), allow_pickle=False)


class ImageCache:
    """``get(i)`` -> the resized uint8 image of record i (``loader(path)`` on a miss, then stored)."""

    def __init__(self, paths: list[Path], imgsz: int, loader, mode: str = "none", directory: Path | None = None,
                 compression: str = "none"):
        self.paths, self.imgsz, self.loader, self.mode = list(paths), imgsz, loader, mode
        self.compress, self.decompress = _compressor(compression)
        self.suffix = {"none": ".npy", "lz4": ".npy.lz4", "zstd": ".npy.zst"}[compression]
        self.directory = Path(directory) if directory is not None else None
        self.compression = compression
        self.stats = {"hits": 0, "built": 0, "pruned": 0}
        # reads served from the cache vs decoded from the file, summed over DataLoader workers (shared memory)
        self._reads = mp.Array("q", 2, lock=True)
        self._ram: dict[int, np.ndarray | bytes] = {}
        if mode in ("disk", "hybrid") and self.directory is None:
            raise ValueError("a disk cache needs a directory")

    def _file(self, i: int) -> Path:
        return self.directory / (entry_key(self.paths[i], self.imgsz) + self.suffix)

    def build(self, progress: bool = True) -> ImageCache:
        """Fills the cache (ram: decode all; disk/hybrid: build missing entries, prune stale ones)."""
        if self.mode == "none":
            return self
        from tqdm import tqdm

        if self.directory is not None and self.mode != "ram":
            self.directory.mkdir(parents=True, exist_ok=True)
        wanted = set()
        for i in tqdm(range(len(self.paths)), desc=f"cache {self.mode}", unit="img", disable=not progress,
                      mininterval=0.5 if os.isatty(2) else 30):
            if self.mode == "ram":
                img = self.loader(self.paths[i])
                self._ram[i] = img if self.compression == "none" else self.compress(_encode(img))
                self.stats["built"] += 1
                continue
            f = self._file(i)
            wanted.add(f.name)
            if f.is_file():
                self.stats["hits"] += 1
                raw = f.read_bytes() if self.mode == "hybrid" else None
            else:
                raw = self.compress(_encode(self.loader(self.paths[i])))
                # temp + rename, without yolo_common's fsync: one fsync per image costs minutes on COCO, and
                # an entry lost to a power cut is only rebuilt (a torn one fails to decode: a counted skip)
                tmp = f.with_suffix(f.suffix + f".{os.getpid()}.tmp")
                tmp.write_bytes(raw)
                os.replace(tmp, f)
                self.stats["built"] += 1
            if self.mode == "hybrid":
                self._ram[i] = raw
        if self.mode in ("disk", "hybrid"):
            for f in self.directory.iterdir():
                stale = f.name.endswith(self.suffix) and f.name not in wanted
                if stale or f.name.endswith(".tmp"):  # .tmp: left by a build that was killed mid-write
                    f.unlink(missing_ok=True)
                    self.stats["pruned"] += 1
        log.info("image cache (%s): %d built, %d reused, %d stale pruned", self.mode, self.stats["built"],
                 self.stats["hits"], self.stats["pruned"])
        return self

    @property
    def reads(self) -> dict[str, int]:
        """{"hits": reads served by the cache, "misses": images decoded from their file}, all processes."""
        return {"hits": self._reads[0], "misses": self._reads[1]}

    def _count(self, k: int) -> None:
        with self._reads.get_lock():
            self._reads[k] += 1

    def get(self, i: int) -> np.ndarray:
        out = self._get(i)
        self._count(0 if out is not None else 1)
        return out if out is not None else self.loader(self.paths[i])

    def _get(self, i: int) -> np.ndarray | None:
        if i in self._ram:
            raw = self._ram[i]
            return raw if isinstance(raw, np.ndarray) else _decode(self.decompress(raw))
        if self.mode == "disk":
            f = self._file(i)
            if f.is_file():
                return _decode(self.decompress(f.read_bytes()))
        return None
