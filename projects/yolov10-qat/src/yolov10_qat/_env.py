"""Containing ultralytics' import-time side effects.

``import ultralytics`` creates a settings file under ``~/.config/Ultralytics``, probes the network (DNS) to
decide whether it is online, and later downloads fonts (plots) and ``yolo26n.pt`` (the AMP check on CUDA).
Every function of this package that needs ultralytics calls :func:`ultralytics_env` first, never at import
of the package, so ``import yolov10_qat`` stays light and changes nothing. It sets, only where the user has
not set them already:

- ``YOLO_CONFIG_DIR`` to a private folder (the run root's ``.ultralytics`` by default), so the settings file
  and any font cache live with the run, not in the home directory;
- ``YOLO_OFFLINE=1`` so ultralytics never probes the network and its analytics/Platform callbacks stay off.

Plots are turned off per run (``plots=False``: no font download). The AMP check is not intercepted: on CUDA
ultralytics' ``check_amp`` loads ``yolo26n.pt`` (downloading it when missing; offline it warns and keeps AMP
on); it never runs on CPU. These are process-wide environment variables: a caller embedding the package
in a larger program gets them too, which is why they are set with ``setdefault``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def ultralytics_env(config_dir: str | Path | None = None) -> None:
    """Set ultralytics' environment before its first import (a no-op for variables already set).

    Args:
        config_dir: folder for ultralytics' settings file; default a folder in the system temp dir.
    """
    if "ultralytics" not in __import__("sys").modules:
        d = Path(config_dir) if config_dir is not None else Path(tempfile.gettempdir()) / "yolov10_qat_ultralytics"
        d.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("YOLO_CONFIG_DIR", str(d))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    # Settings are read once at import; make sure the integrations that could phone home are off in them.
    from ultralytics.utils import SETTINGS

    wanted = {"sync": False, "hub": False, "tensorboard": False, "wandb": False, "mlflow": False, "comet": False,
              "clearml": False, "dvc": False, "raytune": False, "neptune": False}
    changes = {k: v for k, v in wanted.items() if k in SETTINGS and SETTINGS[k] != v}
    if changes:
        SETTINGS.update(changes)
