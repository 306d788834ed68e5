"""One TOML writer for the configs that tests and benches hand the agent: tables of
strings, booleans, numbers and lists of them (what config.toml holds)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string, escapes included
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    return str(v)


def table(name: str, values: Mapping[str, Any]) -> str:
    """``[name]`` and its keys (``[[name]]`` for an array of tables: pass "[name]")."""
    return f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in values.items()) + "\n"


def document(tables: Mapping[str, Mapping[str, Any]]) -> str:
    return "".join(table(name, values) for name, values in tables.items())
