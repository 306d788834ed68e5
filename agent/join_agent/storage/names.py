"""Every file name the agent gives a file on the node, defined once (docs/architecture.md,
"Files on the node"). Paths are the config's ([paths]); these are the names inside them."""

from __future__ import annotations

# In pki_dir: the kubelet's own layout (kubelet-client-<timestamp>.pem behind a link).
CLIENT_PREFIX = "kubelet-client"
SERVER_PREFIX = "kubelet-server"
CLIENT_CURRENT = f"{CLIENT_PREFIX}-current.pem"
SERVER_CURRENT = f"{SERVER_PREFIX}-current.pem"
SERVING_PENDING_KEY = f"{SERVER_PREFIX}-pending.key"  # the key of a request not yet approved

# In state_dir.
STATUS_FILE = "status.json"  # the daemon's record (docs/status.md)
AGENT_PIDFILE = "agent.pid"
KUBELET_PIDFILE = "kubelet.pid"
LOCK_FILE = "lock"
TOFU_FILE = "ca-pin"  # the CA pin recorded on first use
MACHINE_RECORD = "machine.json"  # which machine made the credentials (host/machine.py)
SERVING_REQUEST = "serving-request.json"
CERTIFICATES_DIR = "certificates"  # one directory per [[certificate]] table

# Beside every file written atomically, until its rename.
TMP_PREFIX = ".join-agent-tmp-"
