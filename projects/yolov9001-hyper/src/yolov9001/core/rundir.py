"""Run directories (``runs/exp``, ``runs/exp2``, ...) and ``--resume FILE|RUN_DIR`` resolution."""

from __future__ import annotations

from pathlib import Path


def increment_run_dir(log_dir: str | Path, name: str = "exp") -> Path:
    """The first free ``<log_dir>/<name>``, ``<name>2``, ``<name>3``, ... (created)."""
    base = Path(log_dir)
    base.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        path = base / (name if k == 1 else f"{name}{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            k += 1


def resolve_resume(target: str | Path) -> Path:
    """A checkpoint path from ``--resume``: the file itself, or a run dir's ``checkpoints/last.pt`` (else
    ``best.pt``)."""
    p = Path(target)
    if p.is_file():
        return p
    if p.is_dir():
        for name in ("last.pt", "best.pt"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise FileNotFoundError(f"--resume {p}: no checkpoints/last.pt or checkpoints/best.pt in this run dir")
    raise FileNotFoundError(f"--resume {p} does not exist")


def run_dir_of(checkpoint: Path) -> Path:
    """The run dir a checkpoint belongs to (``<run>/checkpoints/x.pt`` -> ``<run>``)."""
    checkpoint = Path(checkpoint).resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
