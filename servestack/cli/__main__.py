"""`python -m servestack.cli`: the same as the `servestack` command."""

import sys

from servestack.cli.main import main

sys.exit(main())
