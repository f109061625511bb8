"""``python -m vastops``: the ``vastops`` command (vastops/cli.py), for where its script is not on PATH."""

import sys

from vastops.cli import main

sys.exit(main())
