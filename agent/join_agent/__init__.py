"""join-agent: joins a Kubernetes worker to its cluster and keeps its credentials valid."""

__version__ = "0.1.0"
