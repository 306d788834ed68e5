"""One line of `join-agent check`: a level, what was checked, and what was found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["PASS", "WARN", "FAIL", "SKIP"]


@dataclass(frozen=True)
class Result:
    level: Level
    name: str
    message: str

    def line(self) -> str:
        return f"{self.level:<5} {self.name}: {self.message}"
