"""The ``[[certificate]]`` tables: the control-plane host's extra certificates, each with
its files, owner and one action (docs/control-plane.md)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from join_agent.config.model import (
    ACTION_KINDS,
    KEY_TYPES,
    MAX_CN,
    NOT_AN_ADDRESS,
    USAGES,
    Action,
    CertificateSpec,
    address_problem,
)
from join_agent.config.reader import Reader, closest
from join_agent.errors import ConfigError

_CERT_KEYS = {
    "name", "profile", "common_name", "organization", "organizational_unit", "hosts",
    "node_addresses", "key", "usages", "cert_file", "key_file", "ca_file", "cert_mode",
    "key_mode", "owner", "group", "action",
}  # fmt: skip
_ACTION_KEYS = {"command", "shell", "smf_restart", "smf_refresh", "systemd_reload", "signal",
                "pidfile", "timeout"}  # fmt: skip
_HOST = re.compile(
    r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)
_CERT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def certificates(r: Reader, kind: str, node_paths: dict[str, Path]) -> tuple[CertificateSpec, ...]:
    raw = r.doc.get("certificate", [])
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise r.fail("certificate", "must be an array of tables ([[certificate]])")
    if raw and kind != "cfssl":
        raise r.fail("certificate", 'tables need signer.kind = "cfssl" (profiles are CFSSL\'s)')
    specs: list[CertificateSpec] = []
    # The node's own files, and everything in its pki and state folders, are off limits.
    seen_files = {node_paths[k]: k for k in ("paths.kubeconfig", "paths.ca_file")}
    folders = {k: node_paths[k] for k in ("paths.pki_dir", "paths.state_dir")}
    for i, t in enumerate(raw):
        where = f"certificate[{i}]"
        for k in t:
            if k not in _CERT_KEYS:
                hint = f"; did you mean {closest(k, _CERT_KEYS)}?" if closest(k, _CERT_KEYS) else ""
                raise r.fail(f"{where}.{k}", f"is not a known key{hint}")
        name = r.string(t, f"{where}.name", "")
        if not _CERT_NAME.match(name):
            raise r.fail(f"{where}.name", "is required: lowercase letters, digits and '-'")
        if any(s.name == name for s in specs):
            raise r.fail(f"{where}.name", f"{name!r} is used by another [[certificate]]")
        spec = _certificate(r, t, f"certificate.{name}", name)
        _check_certificate(r, spec, f"certificate.{name}", seen_files)
        _check_outputs(r, spec, f"certificate.{name}", seen_files, folders)
        specs.append(spec)
    return tuple(specs)


def _certificate(r: Reader, t: Mapping[str, Any], where: str, name: str) -> CertificateSpec:
    return CertificateSpec(
        name=name,
        profile=r.string(t, f"{where}.profile", ""),
        common_name=r.string(t, f"{where}.common_name", ""),
        organization=tuple(r.string_list(t, f"{where}.organization", [])),
        organizational_unit=tuple(r.string_list(t, f"{where}.organizational_unit", [])),
        hosts=tuple(
            dict.fromkeys(h.strip().lower() for h in r.string_list(t, f"{where}.hosts", []))
        ),
        node_addresses=r.boolean(t, f"{where}.node_addresses", False),
        key=r.choice(t, f"{where}.key", KEY_TYPES, "ecdsa-p256"),
        usages=_usages(r, t, f"{where}.usages"),
        cert_file=r.path(t, f"{where}.cert_file", ""),
        key_file=r.path(t, f"{where}.key_file", ""),
        ca_file=r.optional_path(t, f"{where}.ca_file"),
        cert_mode=_mode(r, t, f"{where}.cert_mode", 0o644),
        key_mode=_mode(r, t, f"{where}.key_mode", 0o600),
        owner=r.string(t, f"{where}.owner", ""),
        group=r.string(t, f"{where}.group", ""),
        action=_action(r, t, f"{where}.action"),
    )


def _check_certificate(
    r: Reader, spec: CertificateSpec, where: str, seen_files: dict[Path, str]
) -> None:
    for key in ("profile", "common_name"):
        if not getattr(spec, key):
            raise r.fail(f"{where}.{key}", "is required")
    # X.509's upper bound for a CN, and hosts a certificate can carry (IPs or A-label names).
    if len(spec.common_name) > MAX_CN:
        raise r.fail(
            f"{where}.common_name", f"is longer than the {MAX_CN} characters a CN may have"
        )
    for host in spec.hosts:
        if _HOST.match(host):
            continue
        problem = address_problem(host)
        if problem == NOT_AN_ADDRESS:
            raise r.fail(
                f"{where}.hosts",
                f"has {host!r}, which is neither an IP address nor a DNS name "
                "(internationalized names go in their xn-- form)",
            )
        if problem is not None:
            raise r.fail(f"{where}.hosts", f"has {host!r}, {problem}")
    for key in ("cert_file", "key_file"):
        if getattr(spec, key) == Path():
            raise r.fail(f"{where}.{key}", "is required (an absolute path)")
    if spec.key_mode & 0o007:
        raise r.fail(f"{where}.key_mode", "must not let everyone read the key")
    if spec.key_mode & 0o077 and not spec.group:
        raise r.fail(f"{where}.key_mode", "lets others read the key: give a group, or 0600")


def _check_outputs(
    r: Reader,
    spec: CertificateSpec,
    where: str,
    seen_files: dict[Path, str],
    folders: dict[str, Path],
) -> None:
    """A table's files are its own: never the node's, never another table's certificate or
    key (tables may share one CA file: it holds the same CA)."""
    for key in ("cert_file", "key_file", "ca_file"):
        path = getattr(spec, key)
        if path is None:
            continue
        owner = seen_files.get(path)
        shared_ca = key == "ca_file" and owner is not None and owner.endswith(".ca_file")
        if owner is not None and not shared_ca:
            raise r.fail(f"{where}.{key}", f"is also {owner} ({path})")
        for folder_key, folder in folders.items():
            if path.is_relative_to(folder):
                raise r.fail(f"{where}.{key}", f"is inside {folder_key} ({folder}), the node's")
        seen_files[path] = f"{where}.{key}"


def _usages(r: Reader, t: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = r.string_list(t, key, ["client auth"])
    for v in values:
        if v not in USAGES:
            raise r.fail(key, f"has {v!r}; known: {', '.join(USAGES)}")
    if not values:
        raise r.fail(key, "must name at least one usage")
    return tuple(dict.fromkeys(values))


def _mode(r: Reader, t: Mapping[str, Any], key: str, default: int) -> int:
    value = r.string(t, key, "")
    if not value:
        return default
    if not re.fullmatch(r"0?[0-7]{3}", value):
        raise r.fail(key, f'has {value!r}; write an octal mode as a string, e.g. "0640"')
    return int(value, 8)


def _action(r: Reader, t: Mapping[str, Any], key: str) -> Action:
    a = r.table(key, _ACTION_KEYS, parent=t, key="action")
    given = [k for k in ACTION_KINDS if k in a]
    if len(given) > 1:
        raise r.fail(key, f"names {' and '.join(given)}: give one action")
    timeout = r.duration(a, f"{key}.timeout", "1m")
    if not dt.timedelta(0) < timeout <= dt.timedelta(minutes=10):
        # The pass that runs it is itself bounded; a longer one would be killed unfinished.
        raise r.fail(f"{key}.timeout", "must be more than 0 and at most 10m")
    if not given:
        return Action(kind="", timeout=timeout)
    kind = given[0]
    if kind == "command":
        shell = r.boolean(a, f"{key}.shell", False)
        if shell:
            script = r.string(a, f"{key}.command", "")
            if not script:
                raise r.fail(f"{key}.command", "is empty")
            # The operator wrote shell = true: a script for /bin/sh, run as asked.
            return Action(kind, (script,), shell=True, timeout=timeout)  # noqa: S604
        argv = r.string_list(a, f"{key}.command", [])
        if not argv or not argv[0].startswith("/"):
            raise r.fail(
                f"{key}.command",
                "must be a list whose first item is an absolute path (no shell is used "
                "unless shell = true, and then command is one string)",
            )
        return Action(kind, tuple(argv), timeout=timeout)
    if kind == "signal":
        pidfile = r.optional_path(a, f"{key}.pidfile")
        if pidfile is None:
            raise r.fail(f"{key}.pidfile", "is required with signal")
        sig = r.string(a, f"{key}.signal", "").upper().removeprefix("SIG")
        if sig not in ("HUP", "USR1", "USR2", "TERM", "INT"):
            raise r.fail(f"{key}.signal", "must be one of HUP, USR1, USR2, TERM, INT")
        return Action(kind, (), pidfile=pidfile, signal=sig, timeout=timeout)
    target = r.string(a, f"{key}.{kind}", "")
    if not target:
        raise r.fail(f"{key}.{kind}", "is empty")
    return Action(kind, (target,), timeout=timeout)


def distinct_paths(source: Path, paths: dict[str, Path]) -> None:
    """Each path must be its own: one file written as two things would lose one of them."""
    seen: dict[Path, str] = {}
    for key, path in paths.items():
        if path in seen:
            raise ConfigError(f"{source}: {key} and {seen[path]} are the same path ({path})")
        seen[path] = key
