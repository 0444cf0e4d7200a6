"""tqdm bars that stay readable in logs: refreshed often on a terminal, every 30 s when piped."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(iterable=None, **kwargs) -> tqdm:
    kwargs.setdefault("mininterval", 0.2 if sys.stderr.isatty() else 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
