"""`python -m cnnjobs.cli`: the same as the `cnnjobs` command."""

import sys

from cnnjobs.cli import main

sys.exit(main())
