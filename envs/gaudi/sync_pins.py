"""Rewrite envs/gaudi/pixi.toml's exact pins from the wheels in envs/gaudi/wheelhouse.

    python envs/gaudi/sync_pins.py [--wheelhouse DIR] [--manifest FILE] [--check]

Each pinned line carries a ``# sync_pins: <name>`` marker; the version comes from the wheel file name
(``{name}-{version}-{pytag}-{abitag}-{plat}.whl``), and the Python version from torch's ``cp3XX`` tag.
Exits non-zero, naming what is missing, when a pinned package has no wheel or has wheels of two versions
(mixing releases is the classic way to get an unloadable bridge).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGES = ("torch", "torchvision", "habana-torch-plugin", "habana-torch-dataloader")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_versions(wheelhouse: Path) -> dict[str, set[tuple[str, str]]]:
    """Map normalised package name -> {(version, python tag)} of the wheels in ``wheelhouse``."""
    found: dict[str, set[tuple[str, str]]] = {}
    for whl in wheelhouse.glob("*.whl"):
        parts = whl.name[:-4].split("-")
        if len(parts) < 5:
            continue
        found.setdefault(_norm(parts[0]), set()).add((parts[1], parts[-3]))
    return found


def sync(manifest: Path, wheelhouse: Path) -> str:
    """Return the manifest text with pins (and python) rewritten; raise SystemExit on missing wheels."""
    found = wheel_versions(wheelhouse)
    problems = []
    pins: dict[str, str] = {}
    for pkg in PACKAGES:
        versions = found.get(_norm(pkg), set())
        if len({v for v, _ in versions}) != 1:
            problems.append(f"{pkg}: {'no wheel' if not versions else 'several versions ' + str(sorted(versions))}")
            continue
        pins[pkg], pytag = sorted(versions)[0]
        if pkg == "torch":
            m = re.fullmatch(r"cp3(\d+)", pytag)
            pins["python"] = f"3.{m.group(1)}.*" if m else ""
    if problems:
        raise SystemExit(f"{wheelhouse}: cannot pin: " + "; ".join(problems))
    out = []
    for line in manifest.read_text().splitlines(keepends=True):
        m = re.search(r"#\s*sync_pins:\s*([\w-]+)", line)
        if m and m.group(1) in pins and pins[m.group(1)]:
            name = m.group(1)
            spec = pins[name] if name == "python" else f"=={pins[name]}"
            line = re.sub(r'=\s*"[^"]*"', f'= "{spec}"', line, count=1)
        out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheelhouse", type=Path, default=HERE / "wheelhouse")
    ap.add_argument("--manifest", type=Path, default=HERE / "pixi.toml")
    ap.add_argument("--check", action="store_true", help="only report whether the pins match the wheels")
    args = ap.parse_args(argv)
    new = sync(args.manifest, args.wheelhouse)
    if args.check:
        same = new == args.manifest.read_text()
        print("pins match the wheelhouse" if same else "pins differ from the wheelhouse: run without --check")
        return 0 if same else 1
    args.manifest.write_text(new)
    print(f"updated {args.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
