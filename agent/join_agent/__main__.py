import sys

from join_agent.cli import script

sys.exit(script())
