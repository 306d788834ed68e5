"""The node's files: atomic writes and the state lock (files), the versioned key and
certificate pairs behind a ``-current.pem`` link (store), status.json and the pidfiles
(state), the CA pin recorded on first use (trust), and the one trust rule for every path
the agent reads, writes through or runs (guard). Standard library only: the resident
daemon uses all of it."""
