"""`python -m climb_assets.cli`: the `climb` command."""

import sys

from climb_assets.cli.main import main

sys.exit(main())
