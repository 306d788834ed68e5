"""The machine the agent runs on: child processes and the environment each gets
(children), processes by pid (proc), the node's name and addresses (identity, netlink),
the service manager (notify), the per-platform paths and tools (platform), and the
preflight that applies the trust rule to a whole config (preflight). Standard library
only: the resident daemon uses all of it."""
