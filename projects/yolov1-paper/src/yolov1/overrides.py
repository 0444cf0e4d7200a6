"""``key=value`` command-line overrides for the config dataclasses (YOLOX ``merge``, typed).

    python -m yolov1.detection_train epochs=3 data_root=/data/voc batch_size=16 batch_norm=true

``@FILE`` reads overrides from a file, one ``key=value`` per line (``#`` comments), as in ``configs/``:

    accelerate launch -m yolov1.detection_train @configs/detect_voc2012.args epochs=10

Values are coerced to the field's declared type; booleans are parsed explicitly (``bool("false")`` is
True in Python, the classic trap), tuples/lists take comma-separated items, and an unknown key is an
error that lists the valid ones, so a typo never silently trains the default.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from yolo_common.config import parse_bool, parse_value  # noqa: F401 (parse_bool re-exported)

T = TypeVar("T")

def _parse_field(text: str, tp: Any, key: str) -> Any:
    try:
        return parse_value(text, tp)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{key}={text!r}: {e}") from None


def apply_overrides(config: T, overrides: Sequence[str]) -> T:
    """Returns a copy of ``config`` with ``key=value`` overrides applied (the original is untouched).

    Args:
        config: a dataclass instance (nested dataclasses are reached with dotted keys).
        overrides: ``["epochs=3", "lr.base=0.01", ...]``; ``--key=value`` is accepted too.

    Raises:
        ValueError: a malformed item, an unknown key (the message lists the valid keys) or a bad value.
    """
    config = _deepcopy_dc(config)
    for item in expand_files(overrides):
        item = item.lstrip("-")
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        *parents, leaf = key.split(".")
        target = config
        for p in parents:
            target = getattr(target, p, None)
            if not dataclasses.is_dataclass(target):
                raise ValueError(f"unknown config key {key!r}")
        hints = typing.get_type_hints(type(target))
        if leaf not in {f.name for f in dataclasses.fields(target)}:
            valid = ", ".join(sorted(_all_keys(config)))
            raise ValueError(f"unknown config key {key!r}; valid keys: {valid}")
        setattr(target, leaf, _parse_field(value, hints[leaf], key))
    if hasattr(config, "validate"):
        config.validate()
    return config


def expand_files(items: Sequence[str]) -> list[str]:
    """Replaces every ``@FILE`` item by the ``key=value`` lines of that file (later items win)."""
    out = []
    for item in items:
        if item.startswith("@"):
            path = Path(item[1:])
            if not path.is_file():
                raise FileNotFoundError(f"override file {path} does not exist")
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    out.append(line)
        else:
            out.append(item)
    return out


def _deepcopy_dc(obj):
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: _deepcopy_dc(getattr(obj, f.name))
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def _all_keys(obj, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys += _all_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys
