"""Crash points for the crash-safety tests: SIGKILL at a named point of a write.

``JOIN_AGENT_TEST_FAULT`` holds a glob over point names (``before-rename:ca.crt``,
``stage-half:kubelet-client-2*``…); unset, every point is one string comparison. A real
SIGKILL, not an exception: nothing of ours runs after it, as after a power cut (the page
cache survives, but the tests check what a kill can leave, which is what matters here).
"""

from __future__ import annotations

import fnmatch
import os
import signal

ENV = "JOIN_AGENT_TEST_FAULT"
_WANTED = os.environ.get(ENV, "")


def point(name: str) -> None:
    if _WANTED and fnmatch.fnmatchcase(name, _WANTED):
        os.kill(os.getpid(), signal.SIGKILL)
