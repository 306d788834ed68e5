"""The worker's modes, the one thing the command line needs of the protocol: kept apart so
that building the parser (every verb, `--version` too) imports nothing else."""

WORKER_MODES = ("enroll", "inspect", "serving", "certificates", "kubelet")
