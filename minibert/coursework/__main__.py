"""python -m minibert.coursework: see minibert/coursework/cli.py."""

import sys

from minibert.errors import run_cli

from .cli import main

sys.exit(run_cli(main))
