"""Importing yolo_common (every submodule) changes no environment variable or global setting."""

import json
import subprocess
import sys

PROBE = r"""
import json, logging, os, sys, warnings
import torch
def snapshot():
    import matplotlib
    return {
        "environ": dict(os.environ),
        "sys_path": list(sys.path),
        "root_handlers": len(logging.getLogger().handlers),
        "root_level": logging.getLogger().level,
        "warn_filters": len(warnings.filters),
        "torch_dtype": str(torch.get_default_dtype()),
        "torch_threads": torch.get_num_threads(),
        "torch_det": torch.are_deterministic_algorithms_enabled(),
        "cudnn_bench": torch.backends.cudnn.benchmark,
        "mpl_backend": matplotlib.rcParams._get_backend_or_none() if hasattr(matplotlib.rcParams, "_get_backend_or_none") else None,
        "print_opts": str(torch._tensor_str.PRINT_OPTS.__dict__),
    }
before = snapshot()
import importlib, pkgutil, yolo_common
mods = []
for m in pkgutil.walk_packages(yolo_common.__path__, "yolo_common."):
    if m.name.endswith("__main__"):
        continue
    importlib.import_module(m.name)
    mods.append(m.name)
after = snapshot()
changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
if "environ" in changed:
    b, a = changed["environ"]
    changed["environ"] = {k: (b.get(k), a.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
print(json.dumps({"modules": mods, "changed": changed}, default=str))
"""


def test_import_changes_nothing_global():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["modules"]) >= 5, result["modules"]  # the probe really imported the package
    assert result["changed"] == {}


def test_bare_import_is_light():
    code = "import sys, yolo_common; print(sorted(m for m in ('torch','onnxruntime','matplotlib','cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
