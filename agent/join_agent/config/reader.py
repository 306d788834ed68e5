"""Reading one TOML document's values: each accessor checks a key's type and value and
fails with a sentence that names the key (``signer.cfssl.urls[1]``)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from join_agent.config.model import (
    PIN_PATTERN,
    IPAddress,
    address_problem,
    node_name_problem,
)
from join_agent.core.durations import parse_duration, seconds_to_timedelta
from join_agent.errors import ConfigError


class Reader:
    """Typed getters that turn any mistake into a ConfigError naming the key."""

    def __init__(self, doc: Mapping[str, Any], source: Path) -> None:
        self.doc = doc
        self.source = source

    def fail(self, key: str, problem: str) -> ConfigError:
        # A quoted TOML key may hold anything, newlines included: one line, always.
        shown = key if key.isprintable() else repr(key)
        return ConfigError(f"{self.source}: {shown} {problem}".replace("\n", "\\n"))

    def only_tables(self, *names: str) -> None:
        for name in self.doc:
            if name not in names:
                raise self.fail(name, f"is not a known section (known: {', '.join(names)})")

    def table(
        self,
        name: str,
        keys: set[str],
        parent: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> Mapping[str, Any]:
        container = self.doc if parent is None else parent
        value = container.get(key or name, {})
        if not isinstance(value, dict):
            raise self.fail(name, "must be a table ([" + name + "])")
        for k in value:
            if k not in keys:
                hint = f"; did you mean {closest(k, keys)}?" if closest(k, keys) else ""
                raise self.fail(f"{name}.{k}", f"is not a known key{hint}")
        return value

    def _get(self, t: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
        value = t.get(key.rsplit(".", 1)[1])
        if value is not None and (
            not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
        ):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            want = _toml_name(names)
            article = "an" if want[0] in "aeiou" else "a"
            raise self.fail(
                key, f"must be {article} {want}, not {_toml_name(type(value).__name__)}"
            )
        return value

    def string(self, t: Mapping[str, Any], key: str, default: str) -> str:
        value = self._get(t, key, str)
        return default if value is None else str(value)

    def boolean(self, t: Mapping[str, Any], key: str, default: bool) -> bool:
        value = self._get(t, key, bool)
        return default if value is None else bool(value)

    def choice(self, t: Mapping[str, Any], key: str, choices: tuple[Any, ...], default: str) -> Any:
        value = self.string(t, key, default)
        if value not in choices:
            raise self.fail(key, f"is {value!r}; it must be one of: {', '.join(choices)}")
        return value

    def string_list(self, t: Mapping[str, Any], key: str, default: list[str]) -> list[str]:
        value = self._get(t, key, list)
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of strings")
        return list(value)

    def path(self, t: Mapping[str, Any], key: str, default: str) -> Path:
        value = self.string(t, key, "")
        if not value:
            return Path(default)
        if not value.startswith("/"):
            raise self.fail(key, f"must be an absolute path, not {value!r}")
        return Path(value)

    def path_list(
        self, t: Mapping[str, Any], key: str, default: tuple[str, ...]
    ) -> tuple[Path, ...]:
        value = self._get(t, key, list)
        if value is None:
            return tuple(Path(v) for v in default)
        bad = [v for v in value if not isinstance(v, str) or not v.startswith("/")]
        if bad:
            raise self.fail(key, f"must be a list of absolute paths, not {bad[0]!r}")
        return tuple(Path(v) for v in value)

    def optional_path(self, t: Mapping[str, Any], key: str) -> Path | None:
        value = self.string(t, key, "")
        return self.path(t, key, "/") if value else None

    def duration(self, t: Mapping[str, Any], key: str, default: str) -> dt.timedelta:
        value = self._get(t, key, (str, int, float))
        if value is None:
            value = default
        try:
            if isinstance(value, int | float):
                if value < 0:
                    raise self.fail(key, "must not be negative")
                return seconds_to_timedelta(float(value), value)
            return parse_duration(value)
        except ValueError as e:
            raise self.fail(key, str(e)) from None

    def url(
        self, t: Mapping[str, Any], key: str, *, required: bool, schemes: tuple[str, ...]
    ) -> str:
        value = self.string(t, key, "")
        if not value:
            if required:
                raise self.fail(key, 'is required (e.g. "https://10.0.0.5:6443")')
            return ""
        return self._check_url(key, value, schemes)

    def _check_url(self, key: str, value: str, schemes: tuple[str, ...]) -> str:
        # Credentials in a URL are checked first so that no later message can echo them.
        if "@" in urlsplit(value).netloc:
            raise self.fail(key, "must not carry credentials in the URL")
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            raise self.fail(key, f"has an invalid URL {value!r}") from None
        scheme = parts.scheme.lower()
        if scheme not in schemes or not parts.hostname:
            want = " or ".join(schemes)
            article = "an" if want[0] in "aeiouh" else "a"
            raise self.fail(key, f"has {value!r}; it must be {article} {want} URL with a host")
        if parts.query or parts.fragment:
            raise self.fail(key, f"has {value!r}; a base URL takes no query or fragment")
        # One spelling from here on: HTTPS://Host is https://host for every later decision.
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = host if port is None else f"{host}:{port}"
        return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))

    def discovery_source(self, t: Mapping[str, Any], key: str) -> str:
        """A kubeconfig path or an https URL (never http: it would carry the cluster CA)."""
        value = self.string(t, key, "").strip()
        if "://" in value:
            return self._check_url(key, value, ("https",)).rstrip("/") or value
        if value and not value.startswith("/"):
            raise self.fail(key, f"has {value!r}; give an absolute path or an https URL")
        return value

    def url_list(self, t: Mapping[str, Any], key: str, *, required: bool) -> list[str]:
        values = self.string_list(t, key, [])
        if not values and required:
            raise self.fail(
                key, 'is required: list the CFSSL servers, e.g. ["http://10.0.0.5:8888"]'
            )
        return [self._check_url(key, v, ("http", "https")) for v in values]

    def pins(self, t: Mapping[str, Any], key: str) -> tuple[str, ...]:
        values = self.string_list(t, key, [])
        pins = []
        for v in values:
            pin = v.strip().lower()
            if not PIN_PATTERN.match(pin):
                raise self.fail(
                    key,
                    f'has {v!r}; a pin is "sha256:" and 64 hex digits '
                    "(`join-agent pin ca.pem` prints it)",
                )
            pins.append(pin)
        return tuple(pins)

    def addresses(self, t: Mapping[str, Any], key: str) -> tuple[IPAddress, ...]:
        out: list[IPAddress] = []
        for v in self.string_list(t, key, []):
            problem = address_problem(v.strip())
            if problem is not None:
                raise self.fail(key, f"has {v!r}, {problem}")
            out.append(ipaddress.ip_address(v.strip()))
        return tuple(dict.fromkeys(out))

    def node_name(self, t: Mapping[str, Any], key: str) -> str:
        name = self.string(t, key, "").strip().lower()
        if name:
            problem = node_name_problem(name)
            if problem is not None:
                raise self.fail(key, f"is {name!r}: {problem}")
        return name


def _toml_name(python_name: str) -> str:
    return (
        python_name.replace("str", "string")
        .replace("bool", "boolean")
        .replace("list", "array")
        .replace("dict", "table")
        .replace("int", "integer")
    )


def closest(word: str, candidates: set[str]) -> str | None:
    import difflib  # only on this error path: it costs start-up time

    found = difflib.get_close_matches(word, sorted(candidates), n=1)
    return found[0] if found else None
