"""Errors in one line: a pydantic failure becomes ConfigError naming the key, the value and what is allowed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .types import ConfigError, _KeyedValueError

_M = TypeVar("_M", bound=BaseModel)


def validated(model: type[_M], raw: Any, key: str = "") -> _M:
    """`model` from `raw`, or ConfigError with the first problem in one line: key, value, what is allowed."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_one_line(err.errors()[0], raw, key)) from None


_MESSAGES = {
    "float_type": "expected a number",
    "int_type": "expected an integer",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "missing": "missing required key",
    "extra_forbidden": "unknown key",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "too_short": "needs at least {min_length} item(s)",
    "too_long": "allows at most {max_length} item(s)",
    "finite_number": "must be a finite number",
}


def _one_line(error: Any, raw: Any, prefix: str) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    parts = _key_parts(error["loc"], raw)
    if kind == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, _KeyedValueError):
            parts = [*parts, *cause.field.split(".")]
        message = str(cause) if cause is not None else error["msg"]
    elif kind == "literal_error":
        allowed = ", ".join(re.findall(r"'([^']*)'", ctx.get("expected", ""))) or ctx.get("expected", "")
        message = f"{_shown(value)} is not one of {allowed}"
    elif kind in ("missing", "extra_forbidden"):
        message = _MESSAGES[kind]
    else:
        bounds = {name: int(v) if isinstance(v, float) and v.is_integer() else v for name, v in ctx.items()}
        message = _MESSAGES.get(kind, error["msg"]).format(**bounds) + f", got {_shown(value)}"
    key = _join([p for p in (prefix, *parts) if p])
    return f"{key}: {message}" if key else message


def _key_parts(loc: Sequence[Any], raw: Any) -> list[str]:
    """The config key of an error location, without pydantic's union tags ('list', 'alias') and '[key]'."""
    parts: list[str] = []
    value = raw
    for part in loc:
        if part == "[key]":
            continue  # the error is about the key itself, already named
        if isinstance(value, dict):
            parts.append(str(part))
            value = value.get(part)
        elif isinstance(value, (list, tuple)) and isinstance(part, int):
            parts.append(f"[{part}]")
            value = value[part] if 0 <= part < len(value) else None
        # anything else is a union member's tag, not a key of the config
    return parts


def _join(parts: list[str]) -> str:
    return ".".join(parts).replace(".[", "[")


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
