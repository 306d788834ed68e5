"""The `status --json` keys docs/status.md lists, read from its table, against a real
report: every key a report carries must be there (itself, or an object it belongs to that
the table describes whole, such as `last_error`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "status.md"


def documented() -> set[str]:
    """Every key of the table: `a.b`, `a[].b`; "`x.p`, `.q`" names x.p and x.q."""
    keys: set[str] = set()
    for line in DOC.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        names = re.findall(r"`([^`]+)`", first)
        parent = names[0].rsplit(".", 1)[0] if "." in names[0] else ""
        for name in names:
            keys.add(parent + name if name.startswith(".") else name)
    return keys


def paths(doc: Any, prefix: str = "") -> set[str]:
    """The key paths of a JSON document: objects by `.`, list items by `[]`."""
    found: set[str] = set()
    if isinstance(doc, dict):
        for key, value in doc.items():
            here = f"{prefix}.{key}" if prefix else key
            found |= {here} | paths(value, here)
    elif isinstance(doc, list):
        for item in doc:
            found |= paths(item, f"{prefix}[]")
    return found


def undocumented(doc: Any) -> set[str]:
    """The keys of ``doc`` the table does not list, nor any object they belong to."""
    table = documented()

    def covered(path: str) -> bool:
        parts = path.split(".")
        return any(".".join(parts[:i]) in table for i in range(1, len(parts) + 1))

    return {p for p in paths(doc) if not covered(p)}
