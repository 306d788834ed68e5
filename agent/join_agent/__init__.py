"""join-agent: joins a Kubernetes worker to its cluster and keeps its credentials valid."""

__version__ = "0.1.0"

# typing.TYPE_CHECKING's value, without importing typing: the modules that `status` loads
# on its fast path take it from here (`from join_agent import TYPE_CHECKING`), because
# importing typing costs that path more than judging the node does (docs/benchmarks.md;
# PEP 781 makes the same point). mypy reads any `if TYPE_CHECKING:` block by its name.
TYPE_CHECKING = False
