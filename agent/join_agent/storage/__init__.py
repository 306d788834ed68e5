"""The node's files: atomic writes and the state lock (files), every file name (names),
status.json and the pidfiles (state), the CA pin recorded on first use (trust), the one
trust rule for every path the agent reads, writes through or runs (guard), and crash
points for the tests (faults). All of it standard library: the resident daemon uses it.
The one exception is the key/certificate pair store (store), which parses PEM and so
belongs to the worker side; the daemon never imports it."""
