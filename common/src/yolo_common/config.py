"""Typed parsing of command-line strings into config fields (YOLOX ``merge`` / detectron2 overrides).

Projects keep their own config dataclasses and override syntax (``key value`` pairs, ``key=value``,
``@FILE``); what they share is turning one string into a field's declared type, which is where the
classic bugs live: ``bool("False")`` is True (the Habana YOLOX port's ``save_history_ckpt False``),
``int("2.5")`` silently truncated elsewhere, a 1-element "tuple" for a 2-value size.

    parse_value("False", bool)                  -> False
    parse_value("640,640", tuple[int, int])     -> (640, 640)      ("(640, 640)" and "[640,640]" too)
    parse_value("75,105", tuple[float, ...])    -> (75.0, 105.0)
    parse_value("none", int | None)             -> None
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}
_NONE = {"none", "null"}


def parse_bool(text: str) -> bool:
    """``true/false/1/0/yes/no/on/off`` (any case) to a bool; anything else is a ValueError."""
    key = str(text).strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false/1/0/yes/no/on/off), got {text!r}")


def _items(text: str) -> list[str]:
    body = text.strip()
    if body[:1] in "([" and body[-1:] in ")]":
        body = body[1:-1]
    return [s.strip() for s in body.split(",") if s.strip()]


def parse_value(text: str, tp: Any) -> Any:
    """Parse ``text`` as a value of type ``tp``.

    Supports bool, int, float, str, Path, ``X | None`` / ``Optional[X]`` ("none"/"null" -> None),
    ``tuple[A, B]`` (exact arity), ``tuple[A, ...]``, ``list[A]`` and ``Sequence[A]`` (comma-separated,
    optional surrounding brackets).

    Raises:
        ValueError: the text is not a valid value of that type (the message says what was expected).
        TypeError: ``tp`` is not a supported type.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if str(text).strip().lower() in _NONE and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        # Each member in turn, narrowest first as written (`int | float`: "3" -> 3, "0.5" -> 0.5).
        errors = []
        for option in options:
            try:
                return parse_value(text, option)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(" or ".join(errors))
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        items = _items(str(text))
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ValueError(f"expected {len(args)} values separated by commas, got {text!r}")
            return tuple(parse_value(s, t) for s, t in zip(items, args))
        item_tp = args[0] if args else str
        values = [parse_value(s, item_tp) for s in items]
        return values if origin is list or tp is list else tuple(values)
    if tp is bool:
        return parse_bool(text)
    if tp is int:
        try:
            return int(str(text).strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    if tp is float:
        try:
            return float(str(text).strip())
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    if tp is str:
        return str(text)
    if tp is Path:
        return Path(text)
    raise TypeError(f"cannot parse a value of type {tp!r} from a string")
