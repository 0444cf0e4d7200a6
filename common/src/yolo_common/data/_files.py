"""File helpers shared by the readers and writers: image headers, hardlink-or-copy, skip reporting."""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .records import ImageRecord, SkipCounter

log = logging.getLogger("yolo_common.data")

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")

# EXIF orientations 5..8 rotate by 90 degrees: the displayed image is the stored one transposed.
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)


def output_names(files: list[Path]) -> list[str]:
    """A file name (stem) per input for its output (annotated copy): the stem, or ``NNNNN_stem`` where
    several inputs share one (a recursive glob over ``a/x.jpg`` and ``b/x.jpg``), so no output overwrites
    another. O(n), unlike counting per file."""
    from collections import Counter

    counts = Counter(f.stem for f in files)
    return [f.stem if counts[f.stem] == 1 else f"{k:05d}_{f.stem}" for k, f in enumerate(files)]


def list_images(source: str | os.PathLike) -> list[Path]:
    """Image files named by ``source``: one file, a folder (its images, sorted), or a glob pattern.

    Raises:
        FileNotFoundError: nothing there, or no image among it (the message names ``source``).
    """
    import glob

    p = Path(source)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = sorted(Path(f) for f in glob.glob(str(source), recursive=True)
                       if Path(f).suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{source}: no images found (a file, a folder or a glob of "
                                f"{', '.join(IMAGE_SUFFIXES)} files)")
    return files


def read_text(path: Path, what: str = "file") -> str:
    """A text file as UTF-8; non-UTF-8 bytes are a ValueError naming the file and the byte offset
    (instead of a bare UnicodeDecodeError from deep inside a reader)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{display_path(path)}: {what} is not UTF-8 text (byte {e.start}: "
                         f"{e.object[e.start:e.start + 4]!r}); re-save it as UTF-8") from None


def display_path(path) -> str:
    """``str(path)`` that is always valid UTF-8: undecodable bytes of a file name (POSIX names are bytes)
    become ``\\xNN`` escapes, so JSON, logs and XML can carry it."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def safe_file_name(name: str) -> str:
    """A file name that is valid UTF-8, for writers: undecodable bytes become ``%xNN``."""
    return display_path(name).replace("\\x", "%x")


def image_size(path: Path, *, exif: bool = False) -> tuple[int, int]:
    """``(width, height)`` from the image header only (no pixel decode: ~0.2 ms a file from page cache).

    Args:
        path: image file.
        exif: swap width/height when the EXIF orientation rotates by 90 degrees (what ultralytics does
            when it normalises YOLO labels, since OpenCV applies the orientation on load).

    Raises:
        OSError (PIL.UnidentifiedImageError included): the file is missing or not an image.
    """
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        if exif and im.format in ("JPEG", "MPO", "TIFF", "WEBP"):
            if im.getexif().get(0x0112, 1) in _TRANSPOSED_ORIENTATIONS:
                w, h = h, w
    return int(w), int(h)


def image_sizes(paths: list[Path], *, exif: bool = False) -> list[tuple[int, int] | Exception]:
    """Header sizes of many images, read in threads (the cost is file-open latency, not CPU).

    Returns one ``(w, h)`` or the exception raised for each path, in order.
    """

    def one(p):
        try:
            return image_size(p, exif=exif)
        except Exception as e:  # anything PIL throws on a bad file means "skip this image"
            return e

    if len(paths) < 64:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 4) * 2)) as pool:
        return list(pool.map(one, paths))


def list_names(directory: Path) -> set[str]:
    """File names in ``directory`` (one listdir instead of one stat per image: 118k stats cost seconds)."""
    try:
        return set(os.listdir(directory))
    except FileNotFoundError:
        return set()


def link_or_copy(src: Path, dst: Path) -> None:
    """Hardlink ``src`` to ``dst`` (free, no extra disk), copying when linking is impossible (other device)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if os.path.samefile(src, dst):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def unique_names(records: list[ImageRecord], key) -> list[str]:
    """``key(record.path)`` for each record, refusing collisions (writers flatten images into one folder)."""
    names, seen = [], {}
    for r in records:
        name = key(r.path)
        if name in seen:
            raise ValueError(f"two images would be written as {name!r}: {seen[name]} and {r.path}")
        seen[name] = r.path
        names.append(name)
    return names


def report_skipped(skipped: SkipCounter, where: object) -> None:
    """Log what a reader skipped, once per split (a warning per image would flood a 118k-image log)."""
    if skipped.counts:
        log.warning("%s: %s", where, skipped.summary())
