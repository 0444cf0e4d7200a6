"""Everything Gaudi-specific, in one place; nothing here imports Habana code at import time.

What an HPU run needs and where it happens:

1. ``configure_env`` (before torch is imported): the bridge reads ``PT_HPU_*`` once, when it loads
   (and since Gaudi 1.18 ``import torch`` may autoload it), so the lazy-mode flag and the BF16 autocast
   op lists must be in ``os.environ`` first. The legacy ``--hmp --hmp-bf16 F --hmp-fp32 F`` flags (HMP
   was removed in Gaudi 1.12) map onto ``PT_HPU_AUTOCAST_LOWER_PRECISION_OPS_LIST`` /
   ``PT_HPU_AUTOCAST_FP32_OPS_LIST`` + ``torch.autocast("hpu", torch.bfloat16)``. If the bridge is
   already loaded with other values, we stop: setting them now would silently do nothing.
2. ``HpuSteps`` (training loop): lazy mode accumulates ops into a graph that runs at
   ``htcore.mark_step()``; Habana's port calls it after ``backward()`` and after ``optimizer.step()``.
   Off HPU the same object is a no-op (``NoSteps``), so the loop has no device branches.
3. ``build_optimizer`` / ``build_ema``: Habana's fused SGD and fused EMA when the bridge has them,
   else torch's SGD and our ``ModelEMA``.

``activate.sh`` in ``envs/gaudi`` sets the same variables in the shell; both paths agree.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

GAUDI_HINT = ("install the Gaudi stack (Intel's torch + habana-torch-plugin) as envs/gaudi/README.md "
              "describes, and run through `pixi run -e gaudi ...` or after `source envs/gaudi/activate.sh`")
LOWER_LIST_VAR = "PT_HPU_AUTOCAST_LOWER_PRECISION_OPS_LIST"
FP32_LIST_VAR = "PT_HPU_AUTOCAST_FP32_OPS_LIST"
_BRIDGE_MODULES = ("habana_frameworks.torch", "habana_frameworks.torch.core")


def project_configs_dir() -> Path:
    """``projects/yolox-gaudi/configs`` (the op lists live there, where envs/gaudi/activate.sh looks)."""
    return Path(__file__).resolve().parents[2] / "configs"


def resolve_ops_file(path: str | None, default_name: str) -> Path:
    """An op-list file: ``path`` if it exists, else the project's ``configs/<basename>``.

    The seed's commands say ``--hmp-bf16 ./ops_bf16_yolox.txt`` relative to Habana's yolox folder; here
    the same basename is found in ``configs/``.

    Raises:
        FileNotFoundError: neither exists (the message names both).
    """
    name = Path(path).name if path else default_name
    if path and Path(path).is_file():
        return Path(path).resolve()
    fallback = project_configs_dir() / name
    if fallback.is_file():
        return fallback
    raise FileNotFoundError(f"op list {path or default_name!r} not found (also looked for {fallback})")


def desired_env(*, bf16: bool, bf16_list: str | None = None, fp32_list: str | None = None,
                lazy: bool = True, environ=None) -> dict[str, str]:
    """The ``PT_HPU_*`` values an HPU run wants; values already in ``environ`` win (user/activate.sh)."""
    environ = os.environ if environ is None else environ
    want = {
        # Lazy mode is what the port was tuned for; the bridge's default became eager around 1.21.
        "PT_HPU_LAZY_MODE": "1" if lazy else "0",
        # Smaller lazy graphs: less memory and compile time per graph (the port's value).
        "PT_HPU_MAX_COMPOUND_OP_SIZE": "100",
        # We keep shapes fixed instead (fixed batch, no partial batches, --noresize).
        "PT_HPU_ENABLE_REFINE_DYNAMIC_SHAPES": "0",
    }
    out = {k: environ.get(k, v) for k, v in want.items()}
    if bf16:
        # An explicit flag beats the environment; otherwise the environment beats our default.
        for var, flag, name in ((LOWER_LIST_VAR, bf16_list, "ops_bf16_yolox.txt"),
                                (FP32_LIST_VAR, fp32_list, "ops_fp32_yolox.txt")):
            out[var] = str(resolve_ops_file(flag, name)) if flag or var not in environ else environ[var]
    return out


def configure_env(*, bf16: bool, bf16_list: str | None = None, fp32_list: str | None = None,
                  lazy: bool = True, environ=None, modules=None) -> dict[str, str]:
    """Writes the HPU variables into ``environ`` before the bridge loads.

    Args:
        bf16: BF16 autocast requested (``--hmp`` / ``--autocast``): set the op-list variables.
        bf16_list, fp32_list: op-list files (``--hmp-bf16`` / ``--hmp-fp32``); default: the
            project's ``configs/ops_{bf16,fp32}_yolox.txt``.
        lazy: lazy mode (``PT_HPU_LAZY_MODE=1``).
        environ, modules: ``os.environ`` / ``sys.modules`` unless given (tests pass dicts).

    Returns:
        The values set.

    Raises:
        RuntimeError: the Habana bridge is already imported and a value would change (too late).
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    want = desired_env(bf16=bf16, bf16_list=bf16_list, fp32_list=fp32_list, lazy=lazy, environ=environ)
    changed = {k: v for k, v in want.items() if environ.get(k) != v}
    loaded = [m for m in _BRIDGE_MODULES if m in modules]
    if changed and loaded:
        raise RuntimeError(
            f"the Habana bridge ({loaded[0]}) was imported before the HPU settings {sorted(changed)} could "
            f"be applied; it reads them only once, at load. Export them before Python starts "
            f"(`source envs/gaudi/activate.sh`, or PT_HPU_AUTOLOAD=0) and do not import "
            f"habana_frameworks before yolox_gaudi.train")
    environ.update(changed)
    return want


def import_core(module_name: str = "habana_frameworks.torch.core"):
    """The Habana core module (``mark_step``); a clear error pointing at envs/gaudi when missing."""
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise RuntimeError(f"--use_hpu / --device hpu needs the Habana packages (habana_frameworks: {e}); "
                           f"{GAUDI_HINT}") from e


class NoSteps:
    """The CPU/CUDA stand-in for :class:`HpuSteps`: every hook is free."""

    lazy = False

    def after_backward(self) -> None:
        pass

    def after_optimizer_step(self) -> None:
        pass

    def sync(self) -> None:
        pass


def bridge_is_lazy(environ=None) -> bool:
    """Whether the loaded bridge really runs in lazy mode: its own ``utils.internal.is_lazy()``.

    The variable alone is not the answer: bridges >= 1.21 run eager when ``PT_HPU_LAZY_MODE`` is unset
    (older ones ran lazy), and a bridge may refuse or override the value. Only when the bridge has no
    ``is_lazy`` (very old releases) is the variable read, unset meaning eager.
    """
    environ = os.environ if environ is None else environ
    try:
        from habana_frameworks.torch.utils.internal import is_lazy  # type: ignore[import-not-found]
    except ImportError:
        return environ.get("PT_HPU_LAZY_MODE", "0") == "1"
    return bool(is_lazy())


class HpuSteps:
    """The lazy-mode graph cuts of Habana's YOLOX port.

    Args:
        core: ``habana_frameworks.torch.core`` (tests inject a recording fake).
        lazy: whether lazy mode is on (default: :func:`bridge_is_lazy`, the mode the bridge runs in);
            in eager/compile modes ``mark_step`` is skipped (the bridge would only warn).
    """

    def __init__(self, core=None, lazy: bool | None = None):
        self.core = import_core() if core is None else core
        self.lazy = bridge_is_lazy() if lazy is None else lazy

    def after_backward(self) -> None:
        """Cuts the graph after ``loss.backward()`` so forward+backward compile and run as one graph."""
        if self.lazy:
            self.core.mark_step()

    def after_optimizer_step(self) -> None:
        """Cuts again after ``optimizer.step()``: the update is its own (small, fixed-shape) graph."""
        if self.lazy:
            self.core.mark_step()

    def sync(self) -> None:
        """Flushes pending lazy ops (before timing or reading results)."""
        if self.lazy:
            self.core.mark_step()


def fused_sgd_class():
    """Habana's ``FusedSGD`` when the bridge has it, else ``None``."""
    try:
        from habana_frameworks.torch.hpex.optimizers import FusedSGD  # type: ignore[import-not-found]
    except ImportError:
        return None
    return FusedSGD


def fused_ema_class():
    """Habana's ``FusedEMA`` (same decay ramp as ``ModelEMA``) when the bridge has it, else ``None``."""
    try:
        from habana_frameworks.torch.hpex.movingavrg import FusedEMA  # type: ignore[import-not-found]
    except ImportError:
        return None
    return FusedEMA
