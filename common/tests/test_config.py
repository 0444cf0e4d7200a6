from pathlib import Path
from typing import Optional, Sequence

import pytest

from yolo_common.config import parse_bool, parse_value


@pytest.mark.parametrize("text, tp, expected", [
    ("False", bool, False), ("on", bool, True), ("0", bool, False),
    ("3", int, 3), ("2.5", float, 2.5), ("x y", str, "x y"), ("a/b", Path, Path("a/b")),
    ("640,640", tuple[int, int], (640, 640)), ("(0.5, 1.5)", tuple[float, float], (0.5, 1.5)),
    ("[8,12]", tuple[int, int], (8, 12)), ("75,105", tuple[float, ...], (75.0, 105.0)),
    ("a,b", list[str], ["a", "b"]), ("1,2", Sequence[int], (1, 2)), ("", tuple[str, ...], ()),
    ("none", int | None, None), ("7", Optional[int], 7), ("null", tuple[int, int] | None, None),
])
def test_parses_declared_types(text, tp, expected):
    value = parse_value(text, tp)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text, tp, match", [
    ("Flase", bool, "boolean"), ("2.5", int, "integer"), ("abc", float, "number"),
    ("640", tuple[int, int], "2 values"), ("1,x", tuple[int, ...], "integer"),
])
def test_bad_values_say_what_was_expected(text, tp, match):
    with pytest.raises(ValueError, match=match):
        parse_value(text, tp)


def test_unsupported_type_is_a_type_error():
    with pytest.raises(TypeError):
        parse_value("1", dict)


def test_parse_bool_ignores_case_and_whitespace():
    assert parse_bool(" YES ") is True and parse_bool("Off") is False
    with pytest.raises(ValueError, match="boolean"):
        parse_bool("")


@pytest.mark.parametrize("text,expected", [("3", 3), ("0.5", 0.5), ("-2", -2), ("1e-3", 1e-3), ("none", None)])
def test_union_tries_each_member(text, expected):
    """`int | float` used to take only its first member: "0.5" was an error (or truncated)."""
    got = parse_value(text, int | float | None)
    assert got == expected and type(got) is type(expected)


def test_union_error_lists_every_member():
    with pytest.raises(ValueError, match="integer.*or.*number"):
        parse_value("abc", int | float)
    with pytest.raises(ValueError):
        parse_value("none", int | float)  # None is not a member here
