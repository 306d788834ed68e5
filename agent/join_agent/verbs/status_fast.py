"""``join-agent status`` while the daemon runs: the same report, for a fraction of the cost.

Monitoring calls ``status`` all day, and most of what it cost was not judging the node:
argparse, loading the config (TOML, its model, pathlib) and the modules that come with
them (docs/benchmarks.md). Here, for the forms ``status`` is called in (``status``,
``--json``, ``--nagios``, with ``--config``), the settings come from the running daemon's
record of its config (storage/runtime.py), and the report is gathered and rendered by
the same code as always (verbs/status.py, status_text.py).

It only ever answers in full or not at all: when the form is any other, when there is no
usable record, or when the report would need the config after all (the files changed
since the daemon recorded them), ``attempt`` returns None before printing anything, and
the command line goes the usual way (cli.py), errors, ``--help`` and all.
"""

from __future__ import annotations

import os

from join_agent import TYPE_CHECKING

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping, Sequence

    from join_agent.config.model import Config

    # Plain tuples: a NamedTuple class costs this path more to build than it saves.
    Form = tuple[str | None, str]  # --config as given; "" or one of OUTPUTS
    Answer = tuple[str, int]  # what to print, the exit code

OUTPUTS = ("--json", "--nagios")


class NeedsConfig(Exception):
    """The report needs the config itself: the fast path gives up."""


def form_of(words: Sequence[str]) -> Form | None:
    """The ``status`` command line ``words`` spell, or None for any other, argparse's to
    read (pure). Only what argparse reads the same way is taken: ``--config`` once, before
    or after the verb, with a value that is not an option; one of OUTPUTS after it."""
    config: str | None = None
    output = ""
    verb = False
    i = 0
    while i < len(words):
        word = words[i]
        if word == "status" and not verb:
            verb = True
        elif word in OUTPUTS and verb and not output:
            output = word
        elif word == "--config" and config is None and i + 1 < len(words):
            config = words[i + 1]
            i += 1
        elif word.startswith("--config=") and config is None:
            config = word[len("--config=") :]
        else:
            return None
        i += 1
    if not verb or config == "" or (config or "").startswith("-"):
        return None
    return config, output


def config_file(flag: str | None, environ: Mapping[str, str]) -> str:
    """The config file ``status`` reads: --config, $JOIN_AGENT_CONFIG, the default.

    Absolute as cli.py makes it (``Path.absolute``) for the names people write; a name
    spelt otherwise ("a/../b") just finds no record, and the usual path runs.
    """
    from join_agent.host import platform

    name = flag or environ.get(platform.CONFIG_ENV) or platform.current().config_file
    return name if os.path.isabs(name) else os.path.join(os.getcwd(), name)


def attempt(form: Form, environ: Mapping[str, str], now: dt.datetime) -> Answer | None:
    """The whole answer of ``status`` as ``form`` asks for it, or None (the usual path)."""
    from join_agent import __version__
    from join_agent.host import platform
    from join_agent.storage import runtime

    flag, output = form
    config = config_file(flag, environ)
    settings = runtime.settings_for(platform.current().runtime_dir, config, __version__)
    if settings is None:
        return None
    from join_agent.verbs import status, status_text

    try:
        report = status.gather_for(settings, now, config=_needs_config)
    except NeedsConfig:
        return None
    if output == "--nagios":
        return status_text.render_nagios(report), report.exit_code
    if output == "--json":
        return status_text.render_json(report), report.exit_code
    return status_text.render_text(report), report.exit_code


def _needs_config() -> Config:
    raise NeedsConfig
