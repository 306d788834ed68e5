"""Serve the STAND-IN API server (tests/standins/kube_apiserver.py) inside a system-test
machine until SIGTERM: ``python3 serve_apiserver.py WORKDIR OUT TOKEN_FILE``.

It is copied into the machine with the tests/ files it imports, runs on the machine's own
python3 and Debian's python3-cryptography, reads the bootstrap token it accepts from a
file (never argv), and writes ``{"url": ..., "pin": ...}`` to OUT once it serves.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the copied tests/ tree

from tests.standins.kube_apiserver import StandinApiServer


def main(argv: list[str]) -> int:
    workdir, out, token_file = (Path(a) for a in argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: stop.set())
    with StandinApiServer(workdir) as api:
        api.add_token(token_file.read_text().strip())
        out.write_text(json.dumps({"url": api.url, "pin": api.ca_pin}))
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
