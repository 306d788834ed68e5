import sys

from join_agent.cli import main

sys.exit(main())
