"""docs/join-agent.8: clean for groff and man, and in step with the program: every verb and
flag the parser has, every config key the config reader accepts, the version."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from join_agent import __version__, usage
from join_agent.config import loading, model
from join_agent.errors import ConfigError
from join_agent.host import platform
from join_agent.signers import credentials
from tests.conftest import need

PAGE = Path(__file__).resolve().parents[2] / "docs" / "join-agent.8"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        need(name, f"apt-get install {package}")
        raise AssertionError  # need() does not return
    return path


def warnings(page: Path) -> str:
    """What groff (every warning on) and man-db's own check say about the page."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "MANWIDTH": "80"}
    out = ""
    for argv in (
        [tool("groff", "groff-base"), "-man", "-ww", "-z", str(page)],
        [tool("man", "man-db"), "--warnings", "-l", str(page)],
    ):
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        out += r.stderr
    return out


def test_page_has_no_warnings() -> None:
    assert warnings(PAGE) == ""


def test_a_broken_page_warns(tmp_path: Path) -> None:
    broken = tmp_path / "join-agent.8"
    broken.write_text(PAGE.read_text().replace(".SH FILES\n", ".SH FILES\n.XB oops\n", 1))
    assert "XB" in warnings(broken)


def plain(roff: str) -> str:
    """Roff source to plain words: escapes and font changes gone."""
    text = re.sub(r"\\f[BIRP]", "", roff).replace("\\-", "-").replace("\\(dq", '"')
    return text.replace("\\&", "").replace("\\c", "")


def sections(roff: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in re.split(r"^\.SH ", roff, flags=re.M)[1:]:
        title, _, body = part.partition("\n")
        out[title.strip().strip('"')] = body
    return out


def tags(body: str) -> list[str]:
    """The words of each .TP tag line (the line after .TP), commas and quotes dropped."""
    lines = body.splitlines()
    found = []
    for i, line in enumerate(lines[:-1]):
        if line == ".TP":
            tag = re.sub(r"^\.[A-Z]+ ", "", lines[i + 1])
            found += [w.strip('",') for w in plain(tag).split() if w.strip('",')]
    return found


def public_verbs() -> dict[str, list[str]]:
    """Verb -> its own flags, for the verbs `join-agent --help` lists."""
    parser = usage.parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    listed = {a.dest for a in sub._choices_actions if a.help}
    common = {"-h", "--help", "--config", "--debug"}
    return {
        name: [o for a in p._actions for o in a.option_strings if o not in common]
        for name, p in sub.choices.items()
        if name in listed
    }


def verbs_documented(roff: str) -> set[str]:
    return set(tags(sections(roff)["COMMANDS"])) & ({*public_verbs()} | {"worker"})


def test_every_verb_and_flag_is_documented() -> None:
    roff = PAGE.read_text()
    s = sections(roff)
    verbs = public_verbs()
    assert verbs_documented(roff) == set(verbs)
    synopsis = plain(s["SYNOPSIS"])
    commands = tags(s["COMMANDS"])
    for verb, flags in verbs.items():
        assert f"join-agent {verb}" in synopsis, verb
        for flag in flags:
            assert flag in synopsis, flag
            assert flag in commands, flag
    parser = usage.parser()
    top = {o for a in parser._actions for o in a.option_strings}
    assert top <= set(tags(s["OPTIONS"]))


def test_a_verb_missing_from_the_page_is_noticed() -> None:
    roff = PAGE.read_text()
    assert ".TP\n.B renew\n" in roff
    assert "renew" not in verbs_documented(roff.replace(".TP\n.B renew\n", ".PP\n", 1))


# Each TOML table and the dataclass whose fields are its keys (same names, by design).
TABLES: dict[str, type[NamedTuple]] = {
    "cluster": model.ClusterConfig,
    "node": model.NodeConfig,
    "signer.cfssl": model.CfsslConfig,
    "signer.kubernetes": model.KubernetesSignerConfig,
    "paths": model.PathsConfig,
    "renewal": model.RenewalConfig,
    "kubelet": model.KubeletConfig,
    "certificate": model.CertificateSpec,
}


def config_keys(roff: str) -> dict[str, set[str]]:
    body = sections(roff)["CONFIGURATION"]
    out: dict[str, set[str]] = {}
    for part in re.split(r"^\.SS ", body, flags=re.M)[1:]:
        title, _, text = part.partition("\n")
        if title.startswith("["):
            out[title.strip("[] ")] = set(tags(text))
    return out


# Tables the reader accepts that the page does not describe yet: each one is a gap to close
# (then drop it from here and add it to TABLES).
UNDOCUMENTED: set[str] = set()


def accepted_tables() -> set[str]:
    """The top-level tables loading.parse accepts, as its own error message lists them."""
    with pytest.raises(ConfigError) as e:
        loading.parse({"no-such-table": {}})
    known = re.search(r"\(known: ([^)]*)\)", str(e.value))
    assert known is not None, str(e.value)
    return set(known.group(1).split(", "))


def test_every_config_key_is_documented() -> None:
    documented = config_keys(PAGE.read_text())
    want: dict[str, set[str]] = {t: set(cls._fields) for t, cls in TABLES.items()}
    metrics = {f.removeprefix("metrics_") for f in model.Config._fields if f.startswith("metrics_")}
    want |= {"signer": {"kind"}, "metrics": metrics}  # Config.signer_kind, Config.metrics_*
    assert documented == want
    top = {t.split(".")[0] for t in documented}
    assert top <= accepted_tables()
    assert accepted_tables() - top <= UNDOCUMENTED


def test_page_names_what_the_code_uses() -> None:
    text = plain(PAGE.read_text())
    th = re.search(r'^\.TH JOIN-AGENT 8 \S+ "join-agent (\S+)"', text, flags=re.M)
    assert th is not None
    assert th.group(1) == __version__  # the footer names the version it documents
    for name in (platform.CONFIG_ENV, credentials.CREDENTIALS_ENV):
        assert name in sections(PAGE.read_text())["ENVIRONMENT"]
    for secret in (credentials.CFSSL_AUTH_KEY, credentials.BOOTSTRAP_TOKEN):
        assert f"/etc/credstore/{secret}" in text
    assert {"SIGHUP", "SIGUSR1", "SIGTERM"} <= set(tags(sections(PAGE.read_text())["SIGNALS"]))
    assert "svc:/system/kubernetes/join-agent:default" in text
