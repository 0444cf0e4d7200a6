"""Importing any module of the package changes no global state and loads neither transformers nor triton.

(transformers' YOLOS modeling import itself sets TORCHINDUCTOR_CACHE_DIR and adds warning filters via
torch._inductor; that is why the package imports transformers only inside the functions that need it.)
"""

import json
import subprocess
import sys

import pytest

PROBE = r"""
import json, logging, os, sys, warnings
import torch
def snapshot():
    return {"environ": dict(os.environ), "root_handlers": len(logging.getLogger().handlers),
            "root_level": logging.getLogger().level, "warn_filters": len(warnings.filters),
            "threads": torch.get_num_threads(), "dtype": str(torch.get_default_dtype()),
            "det": torch.are_deterministic_algorithms_enabled()}
before = snapshot()
import importlib, pkgutil, yolos_bf16accum
mods = [m.name for m in pkgutil.walk_packages(yolos_bf16accum.__path__, "yolos_bf16accum.")
        if m.name != "yolos_bf16accum.triton_kernels"]
for name in mods:
    importlib.import_module(name)
after = snapshot()
changed = sorted(k for k in before if before[k] != after[k])
heavy = sorted(m for m in ("transformers", "triton", "datasets", "wandb") if m in sys.modules)
print(json.dumps({"modules": mods, "changed": changed, "heavy": heavy}))
"""


@pytest.mark.slow  # a fresh interpreter importing torch: ~10 s here
def test_imports_change_nothing_global():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["modules"]) >= 10, result["modules"]
    assert result["changed"] == []
    assert result["heavy"] == []
