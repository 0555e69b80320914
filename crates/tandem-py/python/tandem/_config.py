"""Config dicts as the ``key=value`` assignments the library takes."""

from __future__ import annotations

import json
import math
from typing import Any, Iterator, Mapping


def assignments(config: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """``{"train": {"lr": 1e-3}}`` or ``{"train.lr": 1e-3}`` → ``"train.lr=0.001"``."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from assignments(value, name + ".")
        else:
            yield f"{name}={toml_value(name, value)}"


def toml_value(name: str, value: Any) -> str:
    """A Python value as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} = {value}: config values must be finite")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(name, v) for v in value) + "]"
    raise ValueError(f"{name} = {value!r}: a config value is a bool, number, string or list")
