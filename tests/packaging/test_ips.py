"""The IPS package (packaging/ips), checked on Linux, where pkg(7)'s tools do not exist.

packaging/ips/join-agent.p5m lists every action outside the venv; `packaging/ips/build
--stage-only DIR` lays out exactly those files. Here the manifest is read the way
pkgmogrify reads it (line continuations, $(MACRO)s, then the rules of packaging/ips/transforms,
in the subset of operations they use) and compared with the staged tree both ways: every
staged path is in the manifest with the intended owner, group and mode, and every manifest
path is staged. Then what the service needs is read back from smf/join-agent.xml and the
method script and found in the package (exec paths, man page, doc link, FMRIs), the runtime
dependencies are matched with pyproject.toml and constraints.txt, and the transforms' venv
rules and guards are run on actions shaped like `pkgsend generate` output. Each check is
also shown to fail on a broken copy.

What only illumos can check (pkgsend generate of the real venv, pkgdepend, pkglint,
publishing, installing) is packaging/ips/build's job there.
"""

from __future__ import annotations

import copy
import os
import posixpath
import re
import shlex
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import join_agent
from join_agent.host import platform
from tests.conftest import need

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
IPS = REPO / "packaging" / "ips"
P5M = IPS / "join-agent.p5m"
TRANSFORMS = IPS / "transforms"
BUILD = IPS / "build"
CONSTRAINTS = IPS / "constraints.txt"
SMF_MANIFEST = REPO / "smf" / "join-agent.xml"
SMF_METHOD = REPO / "smf" / "join-agent"
DTD = REPO.parent / "shared" / "ref" / "service_bundle.dtd.1"

PREFIX = "opt/ooce/join-agent"  # the venv, as an IPS path
PYPKGVER = "311"  # the macros ./build passes, with the values of an OmniOS r151046 build
MACROS = {
    "PUBLISHER": "join-agent",
    "VERSION": join_agent.__version__,
    "BRANCH": "151046.0",
    "ARCH": "i386",
    "PYPKGVER": PYPKGVER,
}
# Directories in the staged tree that the static manifest rightly does not declare:
# illumos' own (SUNWcs delivers them; omnios-extra's global transforms drop them too) and
# the venv's parents, which `pkgsend generate` of the venv delivers (declaring them here as
# well would make two actions for one path).
OS_DIRS = {"opt", "lib", "lib/svc", "lib/svc/manifest"}
VENV_DIRS = {"opt/ooce", PREFIX}
# Runtime dependencies that come from OmniOS packages, not from the venv's pins.
OS_PROVIDED = {
    "cryptography": f"library/python-3/cryptography-{PYPKGVER}",
    "pyyaml": f"library/python-3/pyyaml-{PYPKGVER}",
}


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


# --- reading p5m files and transforms, as pkg(7) does ------------------------------------


@dataclass
class Action:
    """One pkg(7) action: `name [payload] key=value ...`; a key may repeat."""

    name: str
    payload: str | None = None
    attrs: dict[str, list[str]] = field(default_factory=dict)

    def one(self, key: str) -> str:
        values = self.attrs.get(key, [])
        assert len(values) == 1, f"{self}: {key} has {len(values)} values"
        return values[0]

    @property
    def path(self) -> str:
        return self.one("path")

    def __str__(self) -> str:
        attrs = " ".join(f"{k}={v}" for k, vs in self.attrs.items() for v in vs)
        return f"{self.name} {self.payload or ''} {attrs}".replace("  ", " ")


@dataclass
class Transform:
    """`<transform [ACTION ...] [ATTR=REGEXP ...] -> OPERATION ARGS>`."""

    types: list[str]
    match: dict[str, str]
    op: str
    args: str


class MogrifyExit(Exception):
    """A transform's `exit` operation: pkgmogrify stops with this code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def logical_lines(text: str, macros: dict[str, str]) -> list[str]:
    """pkgmogrify's reading: strip each line, join a line ending in a backslash to the next
    (without the backslash), replace $(MACRO)s, skip blanks and comments."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line, pending = pending + line, ""
        for name, value in macros.items():
            line = line.replace(f"$({name})", value)
        if line and not line.startswith("#"):
            out.append(line)
    assert not pending, "the file ends in a continuation"
    return out


def parse_action(line: str) -> Action:
    tokens = shlex.split(line)  # values may be quoted ("System/Administration and ...")
    action = Action(tokens[0])
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if not sep:
            assert action.payload is None, f"two payloads in {line!r}"
            action.payload = token
        else:
            action.attrs.setdefault(key, []).append(value)
    return action


def parse_transform(line: str) -> Transform:
    assert line.startswith("<transform ") and line.endswith(">"), line
    body = line[len("<transform ") : -1]
    matching, arrow, operation = body.partition("->")
    assert arrow, f"no -> in {line!r}"
    words = matching.split()
    op, _, args = operation.strip().partition(" ")
    return Transform(
        types=[w for w in words if "=" not in w],
        match=dict(w.split("=", 1) for w in words if "=" in w),
        op=op,
        args=args.strip(),
    )


def read(text: str, macros: dict[str, str]) -> tuple[list[Action], list[Transform]]:
    actions, transforms = [], []
    for line in logical_lines(text, macros):
        assert "$(" not in line, f"a macro ./build does not define: {line!r}"
        assert not line.startswith("<include"), "includes are not supported here"
        if line.startswith("<"):
            transforms.append(parse_transform(line))
        else:
            actions.append(parse_action(line))
    return actions, transforms


def substitute(text: str, action: Action) -> str:
    return re.sub(r"%\((\S+?)\)", lambda m: action.one(m.group(1)), text)


def mogrify(actions: list[Action], transforms: list[Transform]) -> list[Action]:
    """pkgmogrify's apply_transforms for the operations packaging/ips/transforms uses: every
    rule in order; a rule applies when the action's name is one of its types (if any) and
    each of its attributes is present and every value matches (re.match: anchored at the
    start only). `drop` ends the action's processing, `exit` the whole run."""
    out = []
    for original in actions:
        action: Action | None = copy.deepcopy(original)
        for t in transforms:
            assert action is not None
            if t.types and action.name not in t.types:
                continue
            if any(k not in action.attrs for k in t.match):
                continue
            if not all(re.match(rx, v) for k, rx in t.match.items() for v in action.attrs[k]):
                continue
            if t.op == "drop":
                action = None
                break
            if t.op == "exit":
                code, _, message = t.args.partition(" ")
                raise MogrifyExit(int(code), substitute(message, action))
            key, value = shlex.split(t.args)
            value = substitute(value, action)
            if t.op == "set":
                action.attrs[key] = [value]
            elif t.op == "default":
                action.attrs.setdefault(key, [value])
            elif t.op == "add":
                action.attrs.setdefault(key, []).append(value)
            else:
                raise NotImplementedError(f"transform operation {t.op!r}: teach this test")
        if action is not None:
            out.append(action)
    return out


def package(p5m_text: str, extra: str = "") -> list[Action]:
    """The static manifest (plus `extra` actions, as if generated) after the transforms."""
    actions, transforms = read(p5m_text + "\n" + extra, MACROS)
    more, rules = read(TRANSFORMS.read_text(), MACROS)
    assert not more, "packaging/ips/transforms holds actions"
    return mogrify(actions, transforms + rules)


# --- the staged tree ----------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    kind: str  # "dir", "file" or "link"
    mode: int = 0
    target: str = ""


def walk(root: Path) -> dict[str, Node]:
    tree: dict[str, Node] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                tree[rel] = Node("link", target=os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                tree[rel] = Node("dir", stat.S_IMODE(st.st_mode))
            else:
                assert stat.S_ISREG(st.st_mode), rel
                tree[rel] = Node("file", stat.S_IMODE(st.st_mode))
    return tree


def stage(dest: Path) -> dict[str, Node]:
    r = run(["bash", str(BUILD), "--stage-only", str(dest)])
    assert r.returncode == 0, r.stderr
    return walk(dest)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Node]]:
    root = tmp_path_factory.mktemp("ips") / "proto"
    return root, stage(root)


@pytest.fixture(scope="module")
def pkg() -> list[Action]:
    return package(P5M.read_text())


def intended(action: Action) -> tuple[str, str, str]:
    """Owner, group and mode that our policy gives a dir or file action."""
    if action.name == "dir":
        # SUNWcs delivers lib/svc/manifest/* group sys; a shared directory must match.
        group = "sys" if action.path.startswith("lib/svc/manifest/") else "bin"
        return "root", group, "0755"
    executable = action.path.startswith(("lib/svc/method/", f"{PREFIX}/bin/"))
    return "root", "bin", "0555" if executable else "0444"


def problems(actions: list[Action], tree: dict[str, Node]) -> list[str]:
    """Every difference between the package's actions outside the venv and the staged tree,
    and every action whose owner, group or mode is not the intended one."""
    found = []
    by_path: dict[str, Action] = {}
    for a in actions:
        if "path" in a.attrs:
            if a.path in by_path:
                found.append(f"two actions for {a.path}")
            by_path[a.path] = a
    return found + policy_problems(by_path) + tree_problems(by_path, tree)


def policy_problems(by_path: dict[str, Action]) -> list[str]:
    found = []
    dirs = {p for p, a in by_path.items() if a.name == "dir"} | OS_DIRS | VENV_DIRS
    for path, a in by_path.items():
        if path.startswith("/") or path != posixpath.normpath(path):
            found.append(f"{path}: not a plain relative path")
        if a.name in ("file", "dir"):
            want = intended(a)
            if (a.one("owner"), a.one("group"), a.one("mode")) != want:
                found.append(f"{path}: {a.name} should be {want[0]}:{want[1]} {want[2]}")
        parent = posixpath.dirname(path)
        if parent and parent not in dirs:
            found.append(f"{path}: its directory {parent} is not delivered")
    for path in sorted(VENV_DIRS & by_path.keys()):
        found.append(f"{path}: delivered by the venv's generated manifest already")
    return found


def tree_problems(by_path: dict[str, Action], tree: dict[str, Node]) -> list[str]:
    found = []
    for path, node in sorted(tree.items()):
        a = by_path.get(path)
        if a is None:
            if not (node.kind == "dir" and path in OS_DIRS | VENV_DIRS):
                found.append(f"{path}: staged but not in the manifest (a stray path)")
        elif a.name != node.kind:
            found.append(f"{path}: a {node.kind} staged, a {a.name} action")
        elif node.kind == "link" and a.one("target") != node.target:
            found.append(f"{path}: link to {node.target} staged, {a.one('target')} in the p5m")
        elif node.kind in ("file", "dir") and int(a.one("mode"), 8) != node.mode:
            found.append(f"{path}: staged {node.mode:04o}, manifest {a.one('mode')}")
    for path, a in sorted(by_path.items()):
        if a.name in ("file", "dir", "link") and path not in tree:
            found.append(f"{path}: in the manifest but not staged")
    return found


# --- the manifest against the staged tree -------------------------------------------------


def test_manifest_and_staged_tree_match(
    pkg: list[Action], staged: tuple[Path, dict[str, Node]]
) -> None:
    _, tree = staged
    assert problems(pkg, tree) == []
    # Not vacuous: the tree holds what the service needs.
    assert {p for p, n in tree.items() if n.kind == "file"} >= {
        "lib/svc/manifest/system/join-agent.xml",
        "lib/svc/method/join-agent",
        f"{PREFIX}/share/man/man8/join-agent.8",
    }


def edit(pattern: str, replacement: str) -> str:
    text, n = re.subn(pattern, replacement, P5M.read_text(), count=1, flags=re.M)
    assert n == 1, pattern
    return text


EXTRA = "file path=opt/ooce/bin/extra owner=root group=bin mode=0555"
BROKEN = {
    # the method script's action gone: its staged file is a stray
    "missing": (edit(r"^file path=lib/svc/method/join-agent .*$", ""), "a stray path"),
    # an action for a file the build does not stage
    "unstaged": (edit(r"^license ", f"{EXTRA}\nlicense "), "in the manifest but not staged"),
    # an executable with the wrong mode
    "mode": (
        edit(r"(lib/svc/method/join-agent owner=root group=bin) mode=0555", r"\1 mode=0755"),
        "should be root:bin 0555",
    ),
    # a documentation file in the wrong group
    "group": (
        edit(r"(install.md owner=root) \\\n    group=bin", r"\1 group=staff"),
        "should be root:bin 0444",
    ),
    # a link pointing elsewhere than the staged one
    "target": (
        edit(r"target=\.\./join-agent/bin/join-agent", "target=../bin/join-agent"),
        "link to ../join-agent/bin/join-agent staged",
    ),
    # a directory left for pkg to create implicitly
    "implicit dir": (edit(r"^dir  path=opt/ooce/bin .*$", ""), "opt/ooce/bin is not delivered"),
    # the venv's own directory, which pkgsend generate delivers, declared here too
    "venv dir": (
        edit(r"^license ", f"dir path={PREFIX} owner=root group=bin mode=0755\nlicense "),
        "delivered by the venv's generated manifest already",
    ),
}


@pytest.mark.parametrize(("broken", "complaint"), BROKEN.values(), ids=BROKEN.keys())
def test_comparison_fails_on_a_broken_manifest(
    staged: tuple[Path, dict[str, Node]], broken: str, complaint: str
) -> None:
    _, tree = staged
    found = problems(package(broken), tree)
    assert any(complaint in p for p in found), found


def test_comparison_fails_on_a_stray_staged_file(pkg: list[Action], tmp_path: Path) -> None:
    stage(tmp_path / "proto")
    (tmp_path / "proto" / PREFIX / "share" / "doc" / "join-agent" / "README").write_text("x")
    found = problems(pkg, walk(tmp_path / "proto"))
    assert found == [
        f"{PREFIX}/share/doc/join-agent/README: staged but not in the manifest (a stray path)"
    ]


def test_stage_only_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "leftover").write_text("")
    r = run(["bash", str(BUILD), "--stage-only", str(tmp_path)])
    assert r.returncode != 0
    assert "is not empty" in r.stderr


def test_building_the_package_on_linux_says_where_it_runs(tmp_path: Path) -> None:
    r = run(["bash", str(BUILD), str(tmp_path / "repo")])
    assert r.returncode == 2
    assert "illumos" in r.stderr
    assert "--stage-only DIR" in r.stderr
    assert not (tmp_path / "repo").exists()


# --- what the service needs, found in the package -----------------------------------------


def files(pkg: list[Action]) -> dict[str, Action]:
    return {a.path: a for a in pkg if a.name == "file"}


def links(pkg: list[Action]) -> dict[str, Action]:
    return {a.path: a for a in pkg if a.name == "link"}


def resolve(link: Action) -> str:
    return posixpath.normpath(posixpath.join(posixpath.dirname(link.path), link.one("target")))


def smf_service() -> ET.Element:
    bundle = ET.parse(SMF_MANIFEST).getroot()  # noqa: S314 - our own file
    (service,) = bundle.findall("service")
    return service


def test_smf_manifest_is_delivered_unchanged_and_imported(
    pkg: list[Action], staged: tuple[Path, dict[str, Node]]
) -> None:
    root, _ = staged
    (xml,) = [p for p in files(pkg) if p.startswith("lib/svc/manifest/")]
    assert xml == "lib/svc/manifest/system/join-agent.xml"
    assert (root / xml).read_bytes() == SMF_MANIFEST.read_bytes()
    # manifest-import loads it on install and reloads it when an update changes it.
    assert files(pkg)[xml].attrs["restart_fmri"] == ["svc:/system/manifest-import:default"]


def test_method_script_is_the_one_the_manifest_runs(
    pkg: list[Action], staged: tuple[Path, dict[str, Node]]
) -> None:
    root, _ = staged
    execs = {
        m.get("name"): (m.get("exec") or "").split()[0]
        for m in smf_service().findall("exec_method")
        if not (m.get("exec") or "").startswith(":")
    }
    assert set(execs) == {"start", "refresh"}  # stop is :kill
    for name, exe in execs.items():
        action = files(pkg).get(exe.lstrip("/"))
        assert action is not None, f"the {name} method {exe} is not in the package"
        assert action.one("mode") == "0555"
        staged_file = root / exe.lstrip("/")
        assert staged_file.read_bytes() == SMF_METHOD.read_bytes()
        assert os.access(staged_file, os.X_OK)


def test_method_script_runs_the_venvs_console_script(pkg: list[Action]) -> None:
    # The method script execs $AGENT; pip makes it from pyproject's [project.scripts] in the
    # venv's bin/ (generated, so not in the static manifest); /opt/ooce/bin links to it.
    m = re.search(r"^AGENT=(\S+)$", SMF_METHOD.read_text(), flags=re.M)
    assert m is not None
    agent = m.group(1).lstrip("/")
    assert agent == f"{PREFIX}/bin/join-agent"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert posixpath.basename(agent) in scripts
    assert resolve(links(pkg)["opt/ooce/bin/join-agent"]) == agent


def test_man_page_is_where_the_smf_template_says_and_linked(
    pkg: list[Action], staged: tuple[Path, dict[str, Node]]
) -> None:
    root, _ = staged
    man = smf_service().find("template/documentation/manpage")
    assert man is not None
    page = f"{man.get('manpath')}/man{man.get('section')}/{man.get('title')}.{man.get('section')}"
    page = page.lstrip("/")
    assert page in files(pkg)
    assert (root / page).read_bytes() == (REPO / "docs" / "join-agent.8").read_bytes()
    link = links(pkg)["opt/ooce/share/man/man8/join-agent.8"]
    assert resolve(link) == page
    assert link.attrs["restart_fmri"] == ["svc:/system/update-man-index:default"]
    assert files(pkg)[page].attrs["facet.doc.man"] == ["true"]


def test_smf_doc_link_is_in_the_package(pkg: list[Action]) -> None:
    doc = smf_service().find("template/documentation/doc_link")
    assert doc is not None
    uri = doc.get("uri") or ""
    assert uri.startswith("file:///")
    assert uri.removeprefix("file:///") in files(pkg)


def test_package_names_the_smf_service_it_delivers(pkg: list[Action]) -> None:
    fmri = f"svc:/{smf_service().get('name')}"
    (s,) = [a for a in pkg if a.name == "set" and a.one("name") == "org.opensolaris.smf.fmri"]
    assert s.attrs["value"] == [fmri, f"{fmri}:default"]


def test_nothing_is_delivered_where_config_and_credentials_live(pkg: list[Action]) -> None:
    # pkg would salvage an unpackaged file found there at install (a config cloud-init wrote
    # first) and the whole directory at uninstall (the credentials): see join-agent.p5m.
    props = {
        p.get("name"): p.get("value") or ""
        for p in smf_service().findall("property_group[@name='config']/propval")
    }
    d = platform.ILLUMOS
    forbidden = {
        Path(props["file"]).parent,
        Path(props["state_dir"]),
        Path(d.config_file).parent,
        Path(d.state_dir),
        Path(d.pki_dir),
        Path(d.kubeconfig).parent,
        Path(d.ca_file).parent,
    }
    assert Path("/etc/opt/ooce/join-agent") in forbidden
    for a in pkg:
        if "path" in a.attrs:
            for place in forbidden:
                rel = str(place).lstrip("/")
                assert not (a.path == rel or a.path.startswith(rel + "/")), a.path
    assert not [a for a in pkg if "preserve" in a.attrs]  # no editable file at all


def test_example_configs_are_shipped_read_only(
    pkg: list[Action], staged: tuple[Path, dict[str, Node]]
) -> None:
    root, _ = staged
    examples = f"{PREFIX}/share/doc/join-agent/examples"
    # Every example config of the checkout (cloud-init.yaml is for Linux).
    names = sorted(p.name for p in (REPO / "examples").glob("*.toml"))
    assert sorted(posixpath.basename(p) for p in files(pkg) if p.startswith(examples)) == names
    for name in names:
        assert files(pkg)[f"{examples}/{name}"].one("mode") == "0444"
        assert (root / examples / name).read_bytes() == (REPO / "examples" / name).read_bytes()


# --- package metadata and dependencies ----------------------------------------------------


def sets(pkg: list[Action]) -> dict[str, list[str]]:
    return {a.one("name"): a.attrs["value"] for a in pkg if a.name == "set"}


def test_package_metadata(pkg: list[Action]) -> None:
    s = sets(pkg)
    assert s["pkg.fmri"] == [
        f"pkg://join-agent/ooce/system/join-agent@{join_agent.__version__}-151046.0"
    ]
    assert s["pkg.summary"][0]
    assert len(s["pkg.description"][0]) > len(s["pkg.summary"][0])
    assert s["info.classification"][0].startswith("org.opensolaris.category.2008:System/")
    assert s["variant.arch"] == ["i386"]


def test_license_action_ships_the_projects_license(pkg: list[Action]) -> None:
    (lic,) = [a for a in pkg if a.name == "license"]
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert lic.one("license") == declared["text"]
    # pkgsend publish finds the payload in the checkout (./build passes -d REPO).
    assert lic.payload is not None
    assert (REPO / lic.payload).is_file(), (
        f"{lic.payload} is missing at the top of the repository: the IPS package ships it "
        "(Debian has the Apache-2.0 text in /usr/share/common-licenses/Apache-2.0)"
    )


def depends(pkg: list[Action]) -> dict[str, str]:
    return {a.one("fmri"): a.one("type") for a in pkg if a.name == "depend"}


def requirement_names() -> dict[str, str]:
    """pyproject's runtime requirements that apply on Python >= 3.11: name -> minimum."""
    out = {}
    for req in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        spec, _, marker = req.partition(";")
        if "python_version < '3.11'" in marker:
            continue  # tomli: the venv is >= 3.11 (./build refuses older)
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", spec.strip())
        assert m is not None, f"teach this test the requirement {req!r}"
        out[canonical(m.group(1))] = m.group(2)
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    out = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"not an exact pin: {raw!r}"
            out[canonical(name)] = version
    return out


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def test_runtime_depends_on_omnios_python_and_its_native_modules(pkg: list[Action]) -> None:
    deps = depends(pkg)
    assert deps[f"runtime/python-{PYPKGVER}"] == "require"
    for fmri in (*OS_PROVIDED.values(), f"library/python-3/cffi-{PYPKGVER}"):
        assert deps[fmri] == "require", fmri
    assert set(deps.values()) == {"require"}


def test_every_requirement_is_pinned_or_comes_from_omnios() -> None:
    pinned = pins()
    for name, minimum in requirement_names().items():
        if name in OS_PROVIDED:
            # Pinning it would shadow OmniOS's build and make pip compile it from source.
            assert name not in pinned, name
        else:
            assert name in pinned, f"{name} is neither pinned nor an OmniOS package"
            assert version_tuple(pinned[name]) >= version_tuple(minimum), name
    for native in ("cryptography", "cffi", "pycparser", "pyyaml"):
        assert native not in pinned


def test_every_macro_of_the_manifest_is_set_by_the_build() -> None:
    used = set(re.findall(r"\$\(([A-Z]+)\)", P5M.read_text()))
    assert used == set(MACROS)
    build = BUILD.read_text()
    for name in used:
        assert f"-D{name}=" in build, name


# --- the transforms on the venv's generated actions ---------------------------------------

SITE = f"{PREFIX}/lib/python3.11/site-packages"
# What `pkgsend generate` prints for a venv (root:bin, modes from the build tree).
GENERATED = f"""
dir path=opt owner=root group=bin mode=0755
dir path=opt/ooce owner=root group=bin mode=0755
dir path={PREFIX} owner=root group=bin mode=0700
dir path={PREFIX}/bin owner=root group=bin mode=0755
file {PREFIX}/bin/join-agent path={PREFIX}/bin/join-agent owner=root group=bin mode=0755
file {PREFIX}/bin/httpx path={PREFIX}/bin/httpx owner=root group=bin mode=0755
link path={PREFIX}/bin/python3.11 target=/usr/bin/python3.11
file {PREFIX}/pyvenv.cfg path={PREFIX}/pyvenv.cfg owner=root group=bin mode=0644
file {SITE}/httpx/_api.py path={SITE}/httpx/_api.py owner=root group=bin mode=0664
file {SITE}/httpx/__pycache__/_api.cpython-311.pyc \\
    path={SITE}/httpx/__pycache__/_api.cpython-311.pyc owner=root group=bin mode=0644
file {SITE}/join_agent-0.1.0.dist-info/direct_url.json \\
    path={SITE}/join_agent-0.1.0.dist-info/direct_url.json owner=root group=bin mode=0644
file {PREFIX}/bin/activate path={PREFIX}/bin/activate owner=root group=bin mode=0644
"""


def test_transforms_normalise_the_generated_venv(pkg: list[Action]) -> None:
    out = {a.path: a for a in package(P5M.read_text(), GENERATED) if "path" in a.attrs}
    assert "opt" not in out  # SUNWcs'
    assert f"{SITE}/join_agent-0.1.0.dist-info/direct_url.json" not in out
    assert f"{PREFIX}/bin/activate" not in out
    assert f"{PREFIX}/bin/httpx" not in out  # a dependency's command
    assert out[PREFIX].one("mode") == "0755"  # whatever the builder's umask was
    assert out[f"{PREFIX}/bin/join-agent"].one("mode") == "0555"
    assert out[f"{PREFIX}/pyvenv.cfg"].one("mode") == "0444"
    for p in (f"{SITE}/httpx/_api.py", f"{SITE}/httpx/__pycache__/_api.cpython-311.pyc"):
        assert out[p].one("mode") == "0444"
        assert out[p].attrs["pkg.depend.bypass-generate"] == [".*"]
    assert out[f"{PREFIX}/bin/join-agent"].attrs["pkg.depend.bypass-generate"] == [".*"]
    for a in out.values():
        if a.name in ("file", "dir"):
            assert (a.one("owner"), a.one("group"), a.one("mode")) == intended(a), a
    # The rules for the venv leave the static part as it was.
    static = [a for a in pkg if "path" in a.attrs]
    assert [a for a in out.values() if a.path in {b.path for b in static}] == static


PROMISES = {
    # what cloud-init wrote would be salvaged at install (preserve or not)
    "config": (
        "file etc/opt/ooce/join-agent/config.toml path=etc/opt/ooce/join-agent/config.toml"
        " owner=root group=bin mode=0644 preserve=true",
        "must not deliver etc/opt/ooce/join-agent/config.toml",
    ),
    # the credentials would be salvaged at uninstall
    "state": (
        "dir path=var/opt/ooce/join-agent owner=root group=bin mode=0700",
        "must not deliver var/opt/ooce/join-agent",
    ),
    # a compiled module from PyPI instead of OmniOS's package
    "native": (
        f"file x path={SITE}/_cffi_backend.cpython-311.so owner=root group=bin mode=0755",
        "native code in the venv",
    ),
}


@pytest.mark.parametrize(("action", "message"), PROMISES.values(), ids=PROMISES.keys())
def test_transforms_stop_a_build_that_breaks_a_promise(action: str, message: str) -> None:
    with pytest.raises(MogrifyExit) as stopped:
        package(P5M.read_text(), action)
    assert stopped.value.code == 1
    assert message in str(stopped.value)


def test_reader_handles_continuations_quotes_and_macros() -> None:
    (a,) = read('set name=x \\\n    value="a b $(V)" \\\n  value=c\n# c\n', {"V": "1"})[0]
    assert (a.name, a.attrs) == ("set", {"name": ["x"], "value": ["a b 1", "c"]})
    (t,) = read("<transform file path=a/.*$ -> \\\n    set mode 0444>\n", {})[1]
    assert (t.types, t.match, t.op, t.args) == (["file"], {"path": "a/.*$"}, "set", "mode 0444")


# --- checkers -----------------------------------------------------------------------------


def tool(name: str, package_name: str) -> str:
    path = shutil.which(name)
    if path is None:
        need(name, f"apt-get install {package_name} (or run `bash .ci/install-tools`)")
        raise AssertionError  # need() does not return
    return path


def test_staged_smf_manifest_is_valid_against_illumos_dtd(
    staged: tuple[Path, dict[str, Node]],
) -> None:
    if not DTD.is_file():
        pytest.skip(f"{DTD} absent (../shared is not next to this checkout)")
    root, _ = staged
    xml = root / "lib/svc/manifest/system/join-agent.xml"
    xmllint = tool("xmllint", "libxml2-utils")
    r = run([xmllint, "--noout", "--nowarning", "--dtdvalid", str(DTD), str(xml)])
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


def test_build_script_is_shellcheck_clean() -> None:
    assert os.access(BUILD, os.X_OK)
    r = run([tool("shellcheck", "shellcheck"), "--format=gcc", str(BUILD)])
    assert r.returncode == 0, r.stdout + r.stderr
